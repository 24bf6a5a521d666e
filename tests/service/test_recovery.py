"""Preemption recovery in the guard pass, against the fake vast.ai server on a clock the test moves
(no trainer runs here: tests/e2e/test_preemption.py runs the real one) and the GCS emulator.

Noticed within one round; waited for; resumed in place; moved (interruptible, or on-demand after
K preemptions); stopped for good at max attempts or at the run's budget; every attempt's cost
booked to the run; a controller SIGKILLed at each step of a move, then restarted, leaves one
instance for the run and nothing else billing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.money.costs import CostLedger
from comfy_lora_cloud.service.events import PREEMPTION_EVENT
from comfy_lora_cloud.service.runs.recovery import STEPS
from comfy_lora_cloud.service.runs import TrainRequest
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings, set_value
from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.training.status import StatusReporter, read_events, read_status
from tests.service.conftest import API_KEY
from tests.training.trainer_helpers import seed_bucket

SA_JSON = '{"type": "service_account", "client_email": "t@p.iam.gserviceaccount.com"}'
LOADING_S = 31.0  # the fake's created + loading time on the manual clock


@pytest.fixture
def world(fake, clock, gcs_bucket, monkeypatch):
    for k, v in {"LORA_CLOUD_STORAGE": f"gs://{gcs_bucket}/lc", "LORA_CLOUD_VAST_URL": fake.url,
                 "LORA_CLOUD_VAST_API_KEY": API_KEY, "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON,
                 "LORA_CLOUD_MAX_MONTH_USD": "0"}.items():
        monkeypatch.setenv(k, v)
    settings = Settings.load()
    storage = open_storage(settings=settings)
    seed_bucket(storage, images=3)  # a dataset, and the base weights cached in models/
    emitted: list[tuple[str, dict]] = []
    app = App(settings, storage=storage, state=StateStore(settings.state_db), clock=clock,
              emit=lambda name, data: emitted.append((name, data)))
    return app, emitted


async def _start(app, clock, **policy):
    req = TrainRequest(dataset="cat", gpu="4090", interruptible=policy.pop("interruptible", True),
                       overrides={"subset.num_repeats": 2, "max_train_epochs": 4}, **policy)
    result = await app.runs.start(req)
    clock.advance(LOADING_S)  # the instance is running
    return result.run_id, int(result.instance_id)


def _preemptions(emitted, kind=None):
    return [d for n, d in emitted if n == PREEMPTION_EVENT and (kind is None or d["kind"] == kind)]


async def test_noticed_in_one_round_waited_for_then_moved_keeping_id_and_label(world, fake, clock):
    app, emitted = world
    run_id, first = await _start(app, clock, resume_wait_minutes=10)
    assert fake.state.get(first).is_bid
    fake.state.outbid(first, None)  # a higher bid took the GPU, for good

    report = await app.guard_pass()
    assert report.recovery.preempted == [run_id] and report.recovery.waiting == [run_id]
    assert app.state.get_run(run_id).state is RunState.PREEMPTED
    status = read_status(app.storage, run_id)
    assert status.state is RunState.PREEMPTED and str(first) in status.message
    assert [e["instance"] for e in read_events(app.storage, run_id) if e["kind"] == "preempted"] == [str(first)]
    assert [d["instance_id"] for d in _preemptions(emitted, "preempted")] == [str(first)]
    assert report.reconcile.destroyed == [] and fake.state.get(first) is not None  # kept: it may come back

    clock.advance(9 * 60)
    report = await app.guard_pass()
    assert report.recovery.waiting == [run_id] and fake.state.created_count == 1

    clock.advance(2 * 60)  # the wait is over: the run moves
    report = await app.guard_pass()
    second = int(report.recovery.relaunched[run_id])
    assert second != first and fake.state.get(first) is None and list(fake.state.instances) == [second]
    assert fake.state.get(second).label == f"lora-cloud:{run_id}" and fake.state.get(second).is_bid
    run = app.state.get_run(run_id)
    assert (run.id, run.instance_id, run.state) == (run_id, str(second), RunState.STARTING)
    attempts = [e for e in read_events(app.storage, run_id) if e["kind"] == "attempt"]
    assert [(a["n"], a["interruptible"]) for a in attempts] == [(1, True), (2, True)]
    assert read_status(app.storage, run_id).state is RunState.LAUNCHING
    assert _preemptions(emitted, "relaunched")[0]["instance_id"] == str(second)

    clock.advance(LOADING_S)
    report = await app.guard_pass()  # the new instance runs: nothing else happens
    assert report.recovery.to_dict() == {"preempted": [], "waiting": [], "resumed": [], "relaunched": {}, "gave_up": [],
                                  "ended": []}
    assert report.reconcile.destroyed == [] and report.reconcile.lost_runs == []
    # every attempt is booked to the run, and the history shows both
    ledger = CostLedger(app.state, clock)
    booked = {c.instance_id for c in app.state.costs(run_id=run_id)}
    assert booked == {str(first), str(second)} and ledger.run_usd(run_id) > 0
    history = await app.recovery.history(run_id)
    assert [(a.n, a.instance_id, a.end) for a in history.attempts] == [
        (1, str(first), "preempted"), (2, str(second), "running")]
    assert history.preemptions == 1 and history.total_usd == pytest.approx(ledger.run_usd(run_id), abs=1e-3)


async def test_an_instance_that_comes_back_keeps_the_run(world, fake, clock):
    app, emitted = world
    run_id, first = await _start(app, clock)  # the settings' wait: 10 minutes
    fake.state.outbid(first, 120)  # outbid for two minutes

    assert (await app.guard_pass()).recovery.preempted == [run_id]
    clock.advance(120 + LOADING_S)
    report = await app.guard_pass()
    assert report.recovery.resumed == [run_id]
    run = app.state.get_run(run_id)
    assert run.state is RunState.STARTING and run.instance_id == str(first)
    assert fake.state.created_count == 1 and list(fake.state.instances) == [first]
    assert _preemptions(emitted, "resumed")[0]["waited_s"] == pytest.approx(120 + LOADING_S)


async def test_a_run_that_came_back_and_finished_between_two_rounds_is_not_moved(world, fake, clock):
    app, _ = world
    run_id, first = await _start(app, clock)
    fake.state.outbid(first, None)
    assert (await app.guard_pass()).recovery.preempted == [run_id]
    # between two rounds: it resumed, its trainer finished and destroyed it
    StatusReporter(app.storage, run_id).update(state=RunState.DONE, message="done")
    fake.state.destroy(first)
    clock.advance(11 * 60)

    report = await app.guard_pass()
    assert report.recovery.ended == [run_id] and report.recovery.relaunched == {}
    assert fake.state.created_count == 1 and app.state.get_run(run_id).state is RunState.DONE


async def test_an_exited_container_is_moved_at_once(world, fake, clock):
    app, _ = world
    run_id, first = await _start(app, clock)
    fake.state.exit_with_error(first, "container exited with code 137")

    report = await app.guard_pass()
    assert report.recovery.preempted == [run_id] and run_id in report.recovery.relaunched
    assert fake.state.get(first) is None and len(fake.state.instances) == 1


async def test_on_demand_after_k_preemptions(world, fake, clock):
    app, _ = world
    run_id, first = await _start(app, clock, resume_wait_minutes=0, on_demand_after=2)
    fake.state.outbid(first, None)
    second = int((await app.guard_pass()).recovery.relaunched[run_id])
    assert fake.state.get(second).is_bid  # one preemption: still interruptible
    clock.advance(LOADING_S)
    fake.state.outbid(second, None)
    third = int((await app.guard_pass()).recovery.relaunched[run_id])
    assert not fake.state.get(third).is_bid  # the second: on-demand, as the run asked
    assert [e["interruptible"] for e in read_events(app.storage, run_id) if e["kind"] == "attempt"] == [
        True, True, False]


async def test_max_attempts_stops_the_run_for_good(world, fake, clock):
    app, emitted = world
    run_id, first = await _start(app, clock, resume_wait_minutes=0, max_attempts=2)
    fake.state.outbid(first, None)
    second = int((await app.guard_pass()).recovery.relaunched[run_id])
    clock.advance(LOADING_S)
    fake.state.outbid(second, None)

    report = await app.guard_pass()
    assert report.recovery.gave_up == [run_id] and not fake.state.instances  # nothing left billing
    run = app.state.get_run(run_id)
    assert run.state is RunState.FAILED and "max attempts" in run.error
    status = read_status(app.storage, run_id)
    assert status.state is RunState.FAILED and "2 attempt(s)" in status.error
    assert _preemptions(emitted, "gave_up")[0]["run_id"] == run_id
    assert fake.state.created_count == 2


def _run_budget(app, usd: str) -> None:
    set_value(app.settings.home, "max_run_usd", usd)  # as `lora-cloud budget set` does
    app.source.invalidate()


async def test_the_budget_counts_every_attempt(world, fake, clock):
    """Attempt 1 spends part of the budget; the move is allowed while spent + expected fits; the
    watchdog then stops attempt 2 when the two together reach the budget."""
    app, emitted = world
    _run_budget(app, "1")
    run_id, first = await _start(app, clock, resume_wait_minutes=0)
    dph = fake.state.get(first).gpu_dph + fake.state.get(first).disk_dph
    clock.advance(0.4 / dph * 3600)  # attempt 1 spends about $0.40
    await app.guard_pass()
    fake.state.outbid(first, None)
    report = await app.guard_pass()
    second = int(report.recovery.relaunched[run_id])
    spent_first = CostLedger(app.state, clock).run_usd(run_id)
    assert 0.35 < spent_first < 0.5

    clock.advance(LOADING_S)
    await app.guard_pass()
    dph2 = fake.state.get(second).gpu_dph + fake.state.get(second).disk_dph
    clock.advance((1.0 - spent_first) / dph2 * 3600 + 60)  # attempt 2 alone stays far under $1
    report = await app.guard_pass()
    assert any(b.budget == "max_run_usd" and b.level == "breach" for b in report.budgets)
    assert not fake.state.instances and app.state.get_run(run_id).state is RunState.FAILED
    assert CostLedger(app.state, clock).run_usd(run_id) - spent_first < 1.0 <= CostLedger(app.state, clock).run_usd(
        run_id)


async def test_no_move_the_budget_cannot_pay_for(world, fake, clock):
    app, emitted = world
    run_id, first = await _start(app, clock, resume_wait_minutes=0, max_run_usd=1.0)  # this run's own budget
    dph = fake.state.get(first).gpu_dph + fake.state.get(first).disk_dph
    clock.advance(0.97 / dph * 3600)  # $0.97 spent: the rest of the run cannot fit in $1
    fake.state.outbid(first, None)

    report = await app.guard_pass()
    assert report.recovery.gave_up == [run_id] and fake.state.created_count == 1
    assert not fake.state.instances
    run = app.state.get_run(run_id)
    assert run.state is RunState.FAILED and "over the run's $1.00 budget" in run.error


@pytest.mark.parametrize("crash_at", STEPS)
async def test_controller_killed_mid_move_is_reconciled(world, fake, clock, crash_at):
    """A controller (its own process) is SIGKILLed after each step of a move; the next guard pass
    (a restarted ComfyUI, or cron) finishes the job: one instance for the run, recorded, nothing
    else billing."""
    app, _ = world
    run_id, first = await _start(app, clock, resume_wait_minutes=0)
    fake.state.outbid(first, None)

    proc = subprocess.run([sys.executable, "-m", "tests.service.recovery_controller", crash_at],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert f"STEP {crash_at}" in proc.stdout
    assert fake.state.get(first) is None  # the first step of a move destroyed it

    report = await app.guard_pass(grace_s=0)  # the restart
    live = [i for i in fake.state.instances.values() if i.label == f"lora-cloud:{run_id}"]
    assert len(live) == 1 and len(fake.state.instances) == 1, report
    run = app.state.get_run(run_id)
    assert run.state is RunState.STARTING and run.instance_id == str(live[0].id)
    assert fake.state.created_count == 2  # one move, never two
    if crash_at in ("destroyed", "intent_recorded"):
        assert report.recovery.relaunched == {run_id: str(live[0].id)}
    if crash_at == "intent_recorded":
        assert report.reconcile.requeued == [run_id]
    if crash_at == "created":
        assert report.reconcile.adopted == [str(live[0].id)]
    clock.advance(LOADING_S)
    report = await app.guard_pass(grace_s=0)
    assert report.reconcile.destroyed == [] and report.recovery.relaunched == {}
    assert len(fake.state.instances) == 1
