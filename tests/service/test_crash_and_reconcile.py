"""A controller SIGKILLed at each launch step, then restarted: no instance bills that no live run
owns. Plus reconcile's other duties, and a 30 % 429/5xx storm during launches."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from comfy_lora_cloud.errors import LoraCloudError
from comfy_lora_cloud.models import Run, RunState
from comfy_lora_cloud.providers.base import LaunchSpec, run_label, with_bucket_tag
from comfy_lora_cloud.providers.vast import VastClient, VastProvider, offer_from_vast
from comfy_lora_cloud.service.runs.launch import launch_run
from comfy_lora_cloud.service.guard.reconcile import Reconciler
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage.identity import ensure_bucket_id
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.status import StatusReporter
from tests.fakes.vast.server import FakeVast
from tests.service.conftest import API_KEY


@pytest.fixture
def slow_fake(tmp_path):
    """Real time, with a loading phase long enough for a controller to be killed inside it."""
    fv = FakeVast(API_KEY, created_s=0.2, loading_s=1.5, workdir=tmp_path / "instances")
    fv.start_in_thread()
    yield fv
    fv.stop()


def _controller(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.service.controller", *args], capture_output=True,
                          text=True, timeout=60)


def _unowned_billing(fake: FakeVast, state: StateStore) -> list[int]:
    """Instances on the provider that no live run in the store claims."""
    out = []
    for iid, inst in list(fake.state.instances.items()):
        run = state.get_run(inst.label.split(":", 1)[1]) if inst.label else None
        if run is None or run.state.is_terminal or run.instance_id != str(iid):
            out.append(iid)
    return out


@pytest.mark.parametrize("crash_at", ["before_create", "after_create", "loading", "running"])
def test_sigkill_at_each_launch_step_leaves_nothing_unowned(slow_fake, tmp_path, crash_at):
    db = str(tmp_path / "state.db")
    proc = _controller("launch", slow_fake.url, API_KEY, db, "run-1", crash_at)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    state = StateStore(db)
    created = len(slow_fake.state.instances)
    assert created == (0 if crash_at == "before_create" else 1)

    report = json.loads(_controller("reconcile", slow_fake.url, API_KEY, db).stdout)  # the restart
    assert _unowned_billing(slow_fake, state) == []
    run = state.get_run("run-1")
    if crash_at == "before_create":
        assert run.state is RunState.FAILED and report["failed_runs"] == ["run-1"]
    else:
        assert not run.state.is_terminal and run.instance_id == str(next(iter(slow_fake.state.instances)))
        assert report["adopted"] == ([run.instance_id] if crash_at == "after_create" else [])

    # the run ends (here: the user stops it); the next reconcile destroys its instance
    state.update_run("run-1", state=RunState.STOPPED)
    report = json.loads(_controller("reconcile", slow_fake.url, API_KEY, db).stdout)
    assert slow_fake.state.instances == {} and len(report["destroyed"]) == created


async def test_reconcile_grace_vanished_and_foreign(fake, clock, tmp_path):
    state = StateStore(tmp_path / "s.db")
    async with VastClient(fake.url, API_KEY) as client:
        provider = VastProvider(client)
        rows = await client.search_offers({"order": [["dph_total", "asc"]], "limit": 3})
        bucket = LocalStorage(tmp_path / "bucket")
        ghost = with_bucket_tag("ghost", ensure_bucket_id(bucket))  # this bucket's, known nowhere
        orphan = await client.create_instance(rows[0]["id"], image="i", label=run_label(ghost), disk_gb=10)
        foreign = await client.create_instance(rows[1]["id"], image="i", label="someone-else", disk_gb=10)
        # a label from before bucket ids, known neither here nor in this bucket: whose it is cannot
        # be told (another bucket's, maybe), so it is kept
        legacy = await client.create_instance(rows[2]["id"], image="i", label=run_label("ghost"), disk_gb=10)
        state.put_run(Run(id="gone", dataset="d", preset="character", lora_name="l", state=RunState.TRAINING,
                          instance_id="12345"))
        rec = Reconciler(provider, state, bucket, clock=clock, grace_s=120)
        report = await rec.run_once()
        assert report.waiting == [str(orphan["new_contract"])] and report.destroyed == []
        assert report.unattributed == [str(legacy["new_contract"])]
        assert report.lost_runs == ["gone"] and state.get_run("gone").state is RunState.LOST
        clock.advance(121)
        report = await rec.run_once()
        assert report.destroyed == [str(orphan["new_contract"])]
        # not ours, or not provably ours: untouched
        assert sorted(fake.state.instances) == sorted([foreign["new_contract"], legacy["new_contract"]])


@pytest.mark.parametrize("attempts", [6, 2])
async def test_storm_of_429_and_5xx_during_launches(fake, tmp_path, attempts):
    """With 6 attempts almost every launch gets through, with 2 several fail. Either way each failure
    is a clean LoraCloudError, and after the storm one reconcile pass leaves exactly the instances
    of the launches that succeeded."""
    state = StateStore(tmp_path / "s.db")

    async def no_sleep(_s: float) -> None:
        await asyncio.sleep(0)

    async with VastClient(fake.url, API_KEY, sleep=no_sleep, max_attempts=attempts) as client:
        provider = VastProvider(client)
        rows = await client.search_offers({"num_gpus": {"eq": 1}, "order": [["dph_total", "asc"]], "limit": 12})
        fake.fail_next(2, 504, path_contains="/asks/", act_first=True)  # at least two lost create answers
        fake.storm(0.3)

        async def one(i: int, row: dict):
            run = Run(id=f"storm-{i}", dataset="d", preset="character", lora_name="l")
            return await launch_run(provider, state, run, offer_from_vast(row), LaunchSpec(image="i", label=""))

        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(rows)), return_exceptions=True)
        fake.storm(0.0)
        await Reconciler(provider, state, LocalStorage(tmp_path / "bucket"), grace_s=0).run_once()
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    print(f"storm ({attempts} attempts): {len(fake.fault_log)} faults, {sum(a for _, _, a in fake.fault_log)} "
          f"after acting; {len(ok)}/{len(results)} launches ok")
    assert any(acted for p, s, acted in fake.fault_log if "/asks/" in p)  # lost create answers happened
    assert all(isinstance(e, LoraCloudError) for e in failed), failed
    assert ok  # the storm slows launches down; it does not stop them all
    labels = [i.label for i in fake.state.instances.values()]
    assert len(labels) == len(set(labels)) == len(ok)  # no duplicate, nothing left from failures
    assert sorted(str(i.id) for i in ok) == sorted(str(i) for i in fake.state.instances)
    assert fake.state.created_count == len(ok) + len(fake.state.destroyed)
    for i, r in enumerate(results):
        run = state.get_run(f"storm-{i}")
        assert run.state is (RunState.FAILED if isinstance(r, BaseException) else RunState.STARTING)


async def test_periodic_reconcile_respects_runs_live_elsewhere(fake, tmp_path):
    state = StateStore(tmp_path / "s.db")
    bucket = LocalStorage(tmp_path / "bucket")
    # another laptop's run: its trainer reports a live state to the bucket
    StatusReporter(bucket, "laptop-2").update(state=RunState.TRAINING)

    async with VastClient(fake.url, API_KEY) as client:
        rows = await client.search_offers({"order": [["dph_total", "asc"]], "limit": 2})
        kept = await client.create_instance(rows[0]["id"], image="i", label=run_label("laptop-2"), disk_gb=10)
        nobody = with_bucket_tag("nobody", ensure_bucket_id(bucket))
        await client.create_instance(rows[1]["id"], image="i", label=run_label(nobody), disk_gb=10)
        rec = Reconciler(VastProvider(client), state, bucket, grace_s=0)
        stop = asyncio.Event()
        task = asyncio.create_task(rec.run(stop, interval=0.05))
        for _ in range(100):
            if len(fake.state.instances) == 1:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert list(fake.state.instances) == [kept["new_contract"]]
