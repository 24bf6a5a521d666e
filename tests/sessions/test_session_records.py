"""A session's row is checked like a run's (models.Session.from_record, service/home/session_records.py
``row_to_session``): one with a wrong field type is a CorruptRecord that names the field, never a
TypeError in the guard or a view. Its instance still has hours (its own max_hours when readable,
else the most a session may have, from its instance's first sighting here), and the views list
it as damaged."""

from __future__ import annotations

import json

import pytest

from comfy_lora_cloud.errors import CorruptRecord
from comfy_lora_cloud.models import Session, SessionState
from comfy_lora_cloud.providers.base import LaunchSpec, OfferRequest, session_label
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.home.state import StateStore, row_to_session, salvage
from comfy_lora_cloud.settings import MAX_SESSION_HOURS, Settings
from comfy_lora_cloud.storage.local import LocalStorage
from tests.comfy.vast_helpers import KEY, provider_factory_for
from tests.fakes.vast.server import FakeVast
from tests.fakes.vast.state import ManualClock
from tests.sessions.rows import plant, plant_unread

HOUR = 3600.0


def _record(sid: str = "session-x", **fields) -> dict:
    return {**Session(id=sid, state=SessionState.READY, instance_id="7", created_at=1000.0,
                      updated_at=1000.0).to_dict(), **fields}


@pytest.mark.parametrize("fields, words", [
    ({"max_hours": "4"}, "max_hours is '4'"),
    ({"created_at": None}, "created_at is None, not a time"),
    ({"max_hours": 10 ** 17}, "max_hours is an integer of 18 digits"),
    ({"max_hours": MAX_SESSION_HOURS + 1}, "not a number of hours in range"),
    ({"idle_minutes": True}, "idle_minutes is True"),
    ({"remote_port": 99999}, "remote_port is 99999, not a port"),
    ({"state": "hibernating"}, "not a session state"),
    ({"id": "session-other"}, "names session 'session-other'"),
    ({"dph": -1.0}, "dph is -1.0, not a price"),
    ({"created_at": 1e300}, r"created_at is 1e\+300, not a time"),
])
def test_a_record_with_a_wrong_field_is_a_corrupt_record_naming_it(fields, words):
    """As an older version kept it (JSON), carried over into the table as it was."""
    with pytest.raises(CorruptRecord, match=words):
        row_to_session({"id": "session-x", "unread": json.dumps(_record(**fields))})


@pytest.mark.parametrize("fields, words", [
    ({"max_hours": "four"}, "max_hours is 'four'"),
    ({"created_at": None}, "created_at is None, not a time"),
    ({"max_hours": MAX_SESSION_HOURS + 1}, "not a number of hours in range"),
    ({"remote_port": 99999}, "remote_port is 99999, not a port"),
    ({"state": "hibernating"}, "not a session state"),
    ({"dph": -1.0}, "dph is -1.0, not a price"),
    ({"ssh_port": "twenty-two"}, "ssh_port is 'twenty-two', not a port"),
])
def test_a_row_with_a_wrong_column_is_a_corrupt_record_naming_the_session(tmp_path, fields, words):
    store = StateStore(tmp_path / "state.db")
    plant(store, _record(**fields))
    with pytest.raises(CorruptRecord, match=words) as caught:
        store.get_session("session-x")
    assert caught.value.details["session_id"] == "session-x"
    skipped = []
    assert store.list_sessions(on_corrupt=skipped.append) == [] and len(skipped) == 1


@pytest.mark.parametrize("raw, words", [
    ("[" * 50_000 + "]" * 50_000, "nested deeper"),
    ('{"id": "session-x", "max_hours": ' + "9" * 401 + "}", "401 digits"),
    ("[1, 2]", "not an object"),
    ("{oops", "not valid JSON"),
])
def test_a_record_that_is_not_a_session_is_refused_without_a_crash(raw, words):
    with pytest.raises(CorruptRecord, match=words):
        row_to_session({"id": "session-x", "unread": raw})


def test_a_valid_record_reads_back_as_it_was_written(tmp_path):
    session = Session(id="session-x", state=SessionState.READY, max_hours=2.5, ssh_port=2222)
    assert row_to_session({"id": "session-x", "unread": json.dumps(session.to_dict())}) == session
    store = StateStore(tmp_path / "state.db")
    store.put_session(session.to_dict())
    assert store.get_session("session-x") == session


def test_salvage_keeps_what_can_be_read_and_bounds_the_rest():
    session, wrong = salvage(_record(max_hours="four", created_at=None), born=5.0)
    assert (session.max_hours, session.created_at, session.instance_id) == (MAX_SESSION_HOURS, 5.0, "7")
    assert {w.split(" ")[0] for w in wrong} == {"max_hours", "created_at"}
    session, wrong = salvage(_record(created_at=None), born=5.0)
    assert session.max_hours == 4.0  # its own, readable
    session, wrong = salvage({"id": "session-x", "unread": "{oops"}, born=5.0)
    assert (session.id, session.max_hours, session.created_at) == ("session-x", MAX_SESSION_HOURS, 5.0) and wrong


@pytest.fixture
def world(tmp_path, clean_env):
    clock = ManualClock()
    fake = FakeVast(KEY, clock=clock, created_s=1.0, loading_s=5.0, workdir=tmp_path / "instances")
    fake.start_in_thread()
    storage = LocalStorage(tmp_path / "bucket")
    app = App(Settings.load(clean_env), storage=storage, providers={"vast": provider_factory_for(fake)}, clock=clock)
    yield app, fake, clock
    fake.stop()


async def _rent(app, clock, sid: str, **fields) -> str:
    """A session started here (its record, its labelled instance), then its record damaged."""
    session = Session(id=sid, state=SessionState.READY, created_at=clock(), updated_at=clock(), max_hours=4.0)
    async with app.provider("vast")() as provider:
        offers = await provider.search(OfferRequest(min_vram_gb=24, max_dph=1.0))
        inst = await provider.launch(min(offers, key=lambda o: o.dph_total),
                                     LaunchSpec(image="inference:1", label=session_label(sid)))
    session.instance_id = str(inst.id)
    plant(app.state, {**session.to_dict(), **fields})
    return str(inst.id)


async def test_a_damaged_record_still_has_its_hours(world):
    app, fake, clock = world
    text_hours = await _rent(app, clock, "session-text", max_hours="four")  # held to the most a session may have
    null_start = await _rent(app, clock, "session-null", created_at=None)  # its own 4 h, from first sight
    clock.advance(60)
    first = await app.guard_pass()
    assert first.sessions.destroyed == ()
    assert sorted(first.sessions.doubt) == sorted([text_hours, null_start])
    damaged = {p.subject: p.message for p in first.problems if p.kind == "corrupt_session"}
    assert "max_hours is 'four'" in damaged["session-text"] and "held to 72 h" in damaged["session-text"]
    assert "created_at is None" in damaged["session-null"] and "held to 4 h" in damaged["session-null"]

    clock.advance(4 * HOUR)  # past its own hours: the null-start one goes, the other is young for 72 h
    second = await app.guard_pass()
    assert second.sessions.destroyed == (null_start,) and second.sessions.timed_out == ("session-null",)
    assert fake.state.get(int(null_start)) is None and fake.state.get(int(text_hours)) is not None
    assert app.sessions._get("session-null").state is SessionState.TIMED_OUT  # the record is whole again

    clock.advance(MAX_SESSION_HOURS * HOUR)
    third = await app.guard_pass()
    assert third.sessions.destroyed == (text_hours,) and fake.state.get(int(text_hours)) is None
    assert "the most a session may have" in third.sessions.why[text_hours]


async def test_the_listing_shows_a_damaged_record(world):
    app, fake, clock = world
    iid = await _rent(app, clock, "session-bad", max_hours="four", created_at=None)
    plant_unread(app.state, "session-garbage", "{not json")
    await app.guard_pass()  # the instance is seen here
    views = {v.id: v for v in await app.sessions.list()}
    assert set(views) == {"session-bad", "session-garbage"}
    bad = views["session-bad"]
    assert "max_hours is 'four'" in bad.damaged and bad.state == "ready" and bad.instance_id == iid
    assert bad.deadline == bad.created_at + MAX_SESSION_HOURS * HOUR
    assert views["session-garbage"].state == "damaged" and "not valid JSON" in views["session-garbage"].damaged
    # the JSON says so too: the damaged view carries why, as its error
    assert bad.to_dict()["damaged"] == bad.to_dict()["error"] == bad.damaged
    assert await app.sessions.current() is None  # the live one is the one a record vouches for
