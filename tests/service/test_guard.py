"""The guard in-process, over the fake vast.ai server and a local bucket, for what one CLI pass
cannot show: a guard that lives across rounds (ComfyUI's loop) keeps enforcing with a damaged
store or unreadable settings, and tells the sidebar about each problem once."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.models import Run, RunState
from comfy_lora_cloud.providers.base import run_label
from comfy_lora_cloud.providers.vast import VastClient, VastProvider
from comfy_lora_cloud.service.money.budgets import Budgets
from comfy_lora_cloud.service.guard.guard import Guard
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.status import StatusReporter, read_status
from tests.comfy.vast_helpers import vast  # noqa: F401
from tests.service.conftest import API_KEY


class Events(list):
    def __call__(self, name, data):
        self.append((name, data))


@pytest.fixture
async def world(fake, clock, tmp_path):
    client = VastClient(fake.url, API_KEY)
    rows = await client.search_offers({"num_gpus": {"eq": 1}, "order": [["dph_total", "asc"]], "limit": 1})
    made = await client.create_instance(rows[0]["id"], image="i", label=run_label("r1"), disk_gb=10)
    state = StateStore(tmp_path / "state.db")
    state.put_run(Run(id="r1", dataset="d", preset="character", lora_name="l", state=RunState.TRAINING,
                      instance_id=str(made["new_contract"])))
    bucket = LocalStorage(tmp_path / "bucket")
    StatusReporter(bucket, "r1", clock=clock).update(state=RunState.TRAINING)
    yield fake, clock, VastProvider(client), state, bucket, str(made["new_contract"])
    await client.aclose()


async def test_a_damaged_store_still_ends_a_run_at_its_hours_across_rounds(world, tmp_path):
    fake, clock, provider, state, bucket, iid = world
    db = tmp_path / "state.db"
    db.write_bytes(db.read_bytes()[:1024])
    events = Events()
    guard = Guard(provider, StateStore(db), Budgets(max_run_hours=1), storage=bucket, clock=clock, emit=events,
                  grace_s=0)
    first = await guard.run_once()
    assert first.reconcile.doubt == [iid] and fake.state.get(int(iid)) is not None  # no owner to match
    assert "state_store" in {p.kind for p in first.problems}
    clock.advance(3601)  # an hour after this guard first saw it, on its own clock
    second = await guard.run_once()
    assert [v.budget for v in second.budgets if v.level == "breach"] == ["max_run_hours"]
    assert fake.state.get(int(iid)) is None
    assert read_status(bucket, "r1").state is RunState.FAILED  # every reader hears it ended
    announced = [d for n, d in events if n == "lora_cloud.guard" and d["kind"] == "problem"
                 and d["problem"] == "state_store"]
    assert len(announced) == 1 and "damaged" in announced[0]["message"]  # told once, not every round
    assert [d["kind"] for n, d in events if d["kind"] != "problem"] == ["enforced"]


async def test_unreadable_budgets_mid_run_enforce_the_last_known_ones(world):
    fake, clock, provider, state, bucket, iid = world
    calls = []

    def budgets() -> Budgets:
        calls.append(1)
        if len(calls) > 1:
            raise ConfigError("invalid settings: max_dph: Input should be a finite number")
        return Budgets(max_run_hours=1)

    guard = Guard(provider, state, budgets, storage=bucket, clock=clock, grace_s=0)
    assert (await guard.run_once()).budgets == ()
    clock.advance(3601)
    result = await guard.run_once()
    assert [v.budget for v in result.budgets if v.level == "breach"] == ["max_run_hours"]
    assert any(p.kind == "budget" and "last known" in p.message for p in result.problems)
    assert fake.state.get(int(iid)) is None and state.get_run("r1").state is RunState.FAILED


async def test_the_apps_guard_passes_share_a_memory(tmp_path, clean_env, vast):
    """App.guard_pass builds a Guard per pass (its client belongs to that pass's loop); what must
    outlive a pass, the problems already told to the sidebar, lives on the App."""
    from tests.comfy.conftest import seed
    from tests.comfy.vast_helpers import launch_for, provider_factory_for

    fake, clock = vast
    s = seed(tmp_path, clean_env, clock=clock)
    s.app.providers["vast"] = provider_factory_for(fake)
    theirs = await launch_for(s.app.providers["vast"], clock, "newer")
    s.storage.write_bytes("runs/newer/status.json", b'{"state": "paused_for_v2"}')  # a newer trainer's word
    for _ in range(3):
        report = await s.app.guard_pass(grace_s=0)
        assert report.reconcile.doubt == [str(theirs.id)]
        assert fake.state.get(int(theirs.id)) is not None
    told = [d for e, d in s.events if e == "lora_cloud.guard" and d.get("problem") == "corrupt_status"]
    assert len(told) == 1 and "unknown state" in told[0]["message"]
