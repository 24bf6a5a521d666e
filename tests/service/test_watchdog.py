"""Watchdog and ledger over real HTTP against the fake: budgets enforced within one poll."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.models import Run, RunState
from comfy_lora_cloud.providers.base import LaunchSpec
from comfy_lora_cloud.providers.vast import VastClient, VastProvider, offer_from_vast
from comfy_lora_cloud.service.money.budgets import Budgets
from comfy_lora_cloud.service.money.costs import CostLedger
from comfy_lora_cloud.service.runs.launch import launch_run
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.service.guard.watchdog import BUDGET_EVENT, Watchdog
from tests.service.conftest import API_KEY


class Events(list):
    def __call__(self, name, data):
        self.append((name, data))


@pytest.fixture
async def env(fake, clock, tmp_path):
    client = VastClient(fake.url, API_KEY)
    provider = VastProvider(client)
    state = StateStore(tmp_path / "state.db")
    yield fake, clock, client, provider, state
    await client.aclose()


async def _launch(provider, state, client, clock, run_id: str, gpu: str = "RTX 4090"):
    rows = await client.search_offers({"gpu_name": {"eq": gpu}, "num_gpus": {"eq": 1}, "order": [["dph_total", "asc"]],
                                       "allocated_storage": 50, "limit": 1})
    offer = offer_from_vast(rows[0])
    run = Run(id=run_id, dataset="ds", preset="character", lora_name="l")
    inst = await launch_run(provider, state, run, offer, LaunchSpec(image="i", label="", disk_gb=50), clock=clock)
    return inst, offer


async def test_over_max_dph_is_destroyed_in_one_poll(env):
    fake, clock, client, provider, state = env
    inst, offer = await _launch(provider, state, client, clock, "r-dph", gpu="H100 SXM")
    events = Events()
    dog = Watchdog(provider, state, Budgets(max_dph=offer.dph_total / 2), clock=clock, emit=events)
    verdicts = await dog.poll_once()
    assert [v.budget for v in verdicts if v.level == "breach"] == ["max_dph"]
    assert fake.state.get(int(inst.id)) is None  # destroyed on the provider, confirmed
    assert state.get_run("r-dph").state is RunState.FAILED and "max_dph" in state.get_run("r-dph").error
    assert [d["kind"] for n, d in events if n == BUDGET_EVENT] == ["enforced"]


async def test_run_budget_warns_at_80_then_enforces_within_one_interval(env):
    fake, clock, client, provider, state = env
    inst, offer = await _launch(provider, state, client, clock, "r-usd")
    clock.advance(31)  # running
    await client.get_instance(inst.id)
    gpu_dph = offer.dph_total - offer.storage_cost_per_gb_month * 50 / 720
    hour_cost = gpu_dph + offer.storage_cost_per_gb_month * 50 / 720
    budgets = Budgets(max_dph=10, max_run_usd=hour_cost, max_month_usd=1000, max_run_hours=100)
    events = Events()
    dog = Watchdog(provider, state, budgets, clock=clock, emit=events, interval=600)
    await dog.poll_once()
    assert events == []
    clock.advance(0.85 * 3600)
    await dog.poll_once()
    await dog.poll_once()  # the warning is emitted once
    assert [d["kind"] for _, d in events] == ["warning"] and events[0][1]["budget"] == "max_run_usd"
    assert fake.state.get(int(inst.id)) is not None
    clock.advance(600)  # one interval later the spend is over the limit
    await dog.poll_once()
    assert fake.state.get(int(inst.id)) is None
    assert [d["kind"] for _, d in events] == ["warning", "enforced"]


async def test_max_hours_terminates(env):
    fake, clock, client, provider, state = env
    inst, _ = await _launch(provider, state, client, clock, "r-hours")
    dog = Watchdog(provider, state, Budgets(max_dph=10, max_run_usd=1000, max_month_usd=1000, max_run_hours=1),
                   clock=clock)
    clock.advance(3599)
    assert not [v for v in await dog.poll_once() if v.level == "breach"]
    clock.advance(2)
    assert [v.budget for v in await dog.poll_once() if v.level == "breach"] == ["max_run_hours"]
    assert fake.state.get(int(inst.id)) is None


async def test_ledger_tracks_billing_and_reconciles_with_charges(env):
    fake, clock, client, provider, state = env
    inst, _ = await _launch(provider, state, client, clock, "r-ledger")
    dog = Watchdog(provider, state, Budgets(max_dph=10, max_run_usd=1000, max_month_usd=1000, max_run_hours=100),
                   clock=clock, charges=client.charge_report)
    for _ in range(12):
        clock.advance(300)
        await dog.poll_once()
    fi = fake.state.get(int(inst.id))
    billed = fi.gpu_usd + fi.disk_usd
    ledger = CostLedger(state, clock)
    # polls see the instance running from the first poll after loading: close to the real bill
    assert ledger.run_usd("r-ledger") == pytest.approx(billed, rel=1e-6)
    summary = ledger.summary()
    assert summary.per_run_usd["r-ledger"] == pytest.approx(billed, abs=1e-4)
    assert summary.month_usd == pytest.approx(billed, abs=1e-3) and summary.reconciled_with_charges


async def test_run_loop_enforces_within_one_interval(env):
    import asyncio

    fake, clock, client, provider, state = env
    inst, offer = await _launch(provider, state, client, clock, "r-loop", gpu="A100 SXM4")
    dog = Watchdog(provider, state, Budgets(max_dph=offer.dph_total - 0.01), clock=clock, interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(dog.run(stop))
    for _ in range(100):
        if fake.state.get(int(inst.id)) is None:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert fake.state.get(int(inst.id)) is None
