"""The guard's session rules (service/sessions/guard.py SessionGuard), through the App's one guard pass
against the fake vast.ai server on a clock the test moves: a session's instance is owned like a
run's (its record here, its status in the bucket), a controller that crashed mid-start is
reconciled (adopted, or failed), and idle minutes and max hours are enforced from this side too,
for an image that did not stop itself."""

from __future__ import annotations

import json
import os

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.models import Session, SessionState, SessionStatus
from comfy_lora_cloud.providers.base import LaunchSpec, OfferRequest, session_label, with_bucket_tag
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.events import SESSION_EVENT
from comfy_lora_cloud.service.notify import notices_for
from comfy_lora_cloud.service.money.ownership import launch_bucket_id
from comfy_lora_cloud.settings import Settings, set_value
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.inference import read_session_status, status_key
from tests.comfy.vast_helpers import KEY, provider_factory_for
from tests.sessions.rows import forget, plant_unread
from tests.fakes.vast.server import FakeVast
from tests.fakes.vast.state import ManualClock


@pytest.fixture
def world(tmp_path, clean_env):
    clock = ManualClock()
    fake = FakeVast(KEY, clock=clock, created_s=1.0, loading_s=5.0, workdir=tmp_path / "instances")
    fake.start_in_thread()
    storage = LocalStorage(tmp_path / "bucket")
    events: list = []
    app = App(Settings.load(clean_env), storage=storage, providers={"vast": provider_factory_for(fake)}, clock=clock,
              emit=lambda event, data: events.append((event, data)))
    app.events = events
    yield app, fake, clock, storage
    fake.stop()


async def _rent(app, clock, sid: str, *, record: bool = True, state=SessionState.READY, **fields) -> str:
    """What Sessions.start leaves behind (intent, labelled create, record), without the wait."""
    session = Session(id=sid, state=SessionState.LAUNCHING, created_at=clock(), updated_at=clock(), **fields)
    app.sessions._put(session)
    async with app.provider("vast")() as provider:
        offers = await provider.search(OfferRequest(min_vram_gb=24, max_dph=1.0))
        inst = await provider.launch(min(offers, key=lambda o: o.dph_total),
                                     LaunchSpec(image="inference:1", label=session_label(sid)))
    if record:
        app.sessions._record_instance(sid, inst)
        app.sessions._update(sid, state=state)
    clock.advance(10)  # it is up
    return str(inst.id)


def _report(storage, sid: str, clock, **fields) -> None:
    status = SessionStatus(session_id=sid, state=SessionState.READY, updated_at=clock(), **fields)
    storage.write_bytes(status_key(sid), json.dumps(status.to_dict()).encode())


def _age_report(storage, sid: str, seconds: float) -> None:
    """The report was written ``seconds`` earlier on the bucket's clock (the folder's file times):
    how long a ComfyUI has been silent is judged there, not on the test's clock."""
    path = storage.root / status_key(sid)
    written = path.stat().st_mtime - seconds
    os.utime(path, (written, written))


async def test_idle_and_max_hours_are_enforced_by_the_guard_too(world):
    app, fake, clock, storage = world
    idle = await _rent(app, clock, "session-idle", idle_minutes=20)
    busy = await _rent(app, clock, "session-busy", idle_minutes=20, max_hours=1)
    _report(storage, "session-idle", clock, idle_s=19 * 60)  # not yet over the limit
    _report(storage, "session-busy", clock, idle_s=0)
    first = await app.guard_pass()
    assert sorted(first.sessions.owned) == sorted([idle, busy]) and first.sessions.destroyed == ()

    # 3 more minutes without a word from its ComfyUI (an image that does not stop itself)
    clock.advance(180)
    _age_report(storage, "session-idle", 180)
    _report(storage, "session-busy", clock, idle_s=0)
    second = await app.guard_pass()
    assert second.sessions.idle == ("session-idle",) and second.sessions.destroyed == (idle,)
    assert fake.state.get(int(idle)) is None and fake.state.get(int(busy)) is not None
    assert app.sessions._get("session-idle").state is SessionState.IDLE
    assert read_session_status(storage, "session-idle").state is SessionState.IDLE
    # the sidebar hears of it, and the notifier makes it a "session stopped for idleness" notice
    [(event, data)] = [(e, d) for e, d in app.events if e == SESSION_EVENT]
    assert data["kind"] == "idle_stopped" and data["id"] == "session-idle" and not data["session"]["live"]
    assert [n.kind for n in notices_for(event, data, clock())] == ["session_idle"]

    # the busy one reaches its max hours, however busy
    clock.advance(3600)
    _report(storage, "session-busy", clock, idle_s=0)
    third = await app.guard_pass()
    assert third.sessions.timed_out == ("session-busy",) and fake.state.get(int(busy)) is None
    view = await app.sessions.get("session-busy")
    assert view.state == "timed_out" and not view.live and view.cost_usd > 0


@pytest.fixture
def four_hour_runs(clean_env):
    set_value(clean_env, "max_run_hours", "4")


async def test_a_session_keeps_its_own_max_hours_whatever_max_run_hours_says(four_hour_runs, world):
    """comfy start --max-hours 6 gives 6 hours with max_run_hours at 4: the runs' budget is not the
    session's; the session's own limit is enforced by the guard (and by its image)."""
    app, fake, clock, storage = world
    assert app.settings.max_run_hours == 4
    long = await _rent(app, clock, "session-long", idle_minutes=600, max_hours=6)
    _report(storage, "session-long", clock, idle_s=0)
    await app.guard_pass()  # first sight
    clock.advance(5 * 3600)
    _report(storage, "session-long", clock, idle_s=0)
    report = await app.guard_pass()
    assert fake.state.get(int(long)) is not None, report
    assert report.sessions.destroyed == () and "max_run_hours" not in json.dumps(report.to_dict())
    clock.advance(3600)
    _report(storage, "session-long", clock, idle_s=0)
    report = await app.guard_pass()
    assert report.sessions.timed_out == ("session-long",) and fake.state.get(int(long)) is None
    assert (await app.sessions.get("session-long")).error == "reached its 6 h limit (max hours)"


def test_a_sessions_hours_default_to_their_own_setting(clean_env):
    from comfy_lora_cloud.comfy.routes.sessions import session_request
    from comfy_lora_cloud.service.sessions import SessionRequest

    set_value(clean_env, "max_run_hours", "2")
    set_value(clean_env, "session_max_hours", "7.5")
    settings = Settings.load(clean_env)
    assert SessionRequest().checked(settings.session_max_hours).max_hours == 7.5
    assert SessionRequest(max_hours=3).checked(settings.session_max_hours).max_hours == 3
    assert session_request({"idle_minutes": 5}).checked(settings.session_max_hours).max_hours == 7.5
    assert Settings.load(clean_env / "other").session_max_hours == 4.0  # the default: 4 h
    with pytest.raises(ConfigError, match="at most 72"):
        SessionRequest(max_hours=73).checked(4.0)


async def test_a_controller_crash_mid_start_is_reconciled(world):
    app, fake, clock, storage = world
    # killed between the create call and recording it: a labelled instance, a record without it
    iid = await _rent(app, clock, "session-crash", record=False)
    assert app.sessions._get("session-crash").instance_id is None
    report = await app.guard_pass(grace_s=0)
    assert report.sessions.adopted == (iid,) and report.sessions.destroyed == ()
    session = app.sessions._get("session-crash")
    assert (session.instance_id, session.state) == (iid, SessionState.STARTING)

    # killed before the create call: the intent alone fails after the grace period
    app.sessions._put(Session(id="session-never", created_at=clock(), updated_at=clock()))
    clock.advance(300)
    report = await app.guard_pass(grace_s=120)
    assert report.sessions.failed == ("session-never",)
    assert app.sessions._get("session-never").state is SessionState.FAILED

    # the image stopped itself while no controller ran: the instance is gone, the bucket says why
    _report(storage, "session-crash", clock)
    storage.write_bytes(status_key("session-crash"), json.dumps(
        SessionStatus(session_id="session-crash", state=SessionState.IDLE, updated_at=clock()).to_dict()).encode())
    fake.state.destroy(int(iid))
    report = await app.guard_pass()
    assert report.sessions.ended == ("session-crash",)
    assert app.sessions._get("session-crash").state is SessionState.IDLE
    assert fake.state.instances == {}  # nothing left billing


async def test_ownership_of_session_instances(world):
    app, fake, clock, storage = world
    tag = launch_bucket_id(storage, app.state)
    orphan_id = with_bucket_tag("session-orphan", tag)  # this bucket's, but known nowhere
    orphan = await _rent(app, clock, orphan_id)
    forget(app.state, orphan_id)  # no record here (lost)
    legacy = await _rent(app, clock, "session-legacy")  # untagged and known nowhere: whose it is is unknown
    forget(app.state, "session-legacy")
    foreign = await _rent(app, clock, with_bucket_tag("session-theirs", "0123456789ab"))  # another bucket's
    elsewhere = await _rent(app, clock, "session-other")
    forget(app.state, "session-other")
    _report(storage, "session-other", clock)  # but its ComfyUI reports: another controller's live session
    broken = await _rent(app, clock, "session-broken")
    plant_unread(app.state, "session-broken", "{not json")
    vanished = await _rent(app, clock, "session-gone")

    first = await app.guard_pass(grace_s=60)
    s = first.sessions
    assert orphan in s.waiting and elsewhere in s.owned and broken in s.doubt
    assert s.unattributed == (legacy,) and s.foreign == (foreign,)
    assert {("unattributed", legacy), ("foreign_bucket", foreign)} <= {(p.kind, p.subject) for p in first.problems}
    assert ("corrupt_session", "session-broken") in {(p.kind, p.subject) for p in first.problems}
    assert first.reconcile.destroyed == []  # the runs' reconcile leaves session instances alone

    fake.state.destroy(int(vanished))
    clock.advance(120)
    _report(storage, "session-other", clock)
    second = await app.guard_pass(grace_s=60)
    s = second.sessions
    assert s.destroyed == (orphan,) and s.lost == ("session-gone",)
    assert fake.state.get(int(elsewhere)) is not None and fake.state.get(int(broken)) is not None
    assert fake.state.get(int(legacy)) is not None and fake.state.get(int(foreign)) is not None
    assert app.sessions._get("session-gone").state is SessionState.LOST
