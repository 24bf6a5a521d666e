"""Ledger accrual and budget verdicts without a server."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import BudgetExceeded
from comfy_lora_cloud.models import Instance, InstanceState
from comfy_lora_cloud.service.money.budgets import Budgets, check_launch, evaluate
from comfy_lora_cloud.service.money.costs import CostLedger
from comfy_lora_cloud.service.home.state import StateStore


def test_accrual_bills_gpu_only_while_running_and_nothing_offline(tmp_path):
    state = StateStore(tmp_path / "s.db")
    ledger = CostLedger(state)
    t0 = 1_800_000_000.0
    inst = Instance(id="1", label="lora-cloud:r", run_id="r", state=InstanceState.LOADING, dph_total=1.1,
                    storage_dph=0.1, created_at=t0)
    ledger.accrue([inst], t0 + 3600, first_seen={"1": t0})  # loading: storage only (from first sight)
    inst.state = InstanceState.RUNNING
    ledger.accrue([inst], t0 + 7200)
    inst.state = InstanceState.OFFLINE
    ledger.accrue([inst], t0 + 10800)
    assert ledger.run_usd("r") == pytest.approx(0.1 + 1.1)
    booked = ledger.reconcile_charges([{"source": "instance-1", "amount": 1.5}], {"1": "r"}, t0 + 10800)
    assert booked == pytest.approx(0.3) and ledger.run_usd("r") == pytest.approx(1.5)
    ledger.reconcile_charges([{"source": "instance-99", "amount": 7}], {"1": "r"}, t0 + 10800)  # not ours
    assert ledger.run_usd("r") == pytest.approx(1.5)


def test_check_launch_refuses_over_budget():
    b = Budgets(max_dph=1.0, max_run_usd=5.0, max_month_usd=20.0, max_run_hours=2)
    check_launch(b, 0.9, 10.0, 4.0)
    with pytest.raises(BudgetExceeded, match="max_dph"):
        check_launch(b, 1.1, 0.0)
    with pytest.raises(BudgetExceeded, match="max_month_usd"):
        check_launch(b, 0.5, 20.0)
    with pytest.raises(BudgetExceeded, match="max_run_usd"):
        check_launch(b, 0.5, 0.0, 6.0)


def test_evaluate_levels():
    b = Budgets(max_dph=1.0, max_run_usd=10.0, max_month_usd=100.0, max_run_hours=10)
    now = 1_800_000_000.0
    inst = Instance(id="1", run_id="r", dph_total=0.5, created_at=now - 3600)
    assert evaluate(b, [inst], run_usd={"r": 7.9}, month_usd=10, now=now) == []
    (v,) = evaluate(b, [inst], run_usd={"r": 8.0}, month_usd=10, now=now)
    assert (v.level, v.budget) == ("warn", "max_run_usd") and "80%" in v.message
    vs = evaluate(b, [inst], run_usd={"r": 10.0}, month_usd=100, now=now)
    assert [(v.level, v.budget) for v in vs] == [("breach", "max_month_usd"), ("breach", "max_run_usd")]


def test_a_sessions_instance_is_not_held_to_the_runs_max_run_hours():
    """A remote ComfyUI session has hours of its own (its max_hours, enforced by SessionGuard and
    its image); the $/hr and month budgets still hold for it."""
    b = Budgets(max_dph=1.0, max_run_usd=10.0, max_month_usd=100.0, max_run_hours=4)
    now = 1_800_000_000.0
    run = Instance(id="1", run_id="r", dph_total=0.5, created_at=now - 5 * 3600)
    session = Instance(id="2", session_id="session-x", dph_total=0.5, created_at=now - 5 * 3600)
    vs = evaluate(b, [run, session], run_usd={"r": 1.0}, month_usd=10, now=now)
    assert [(v.instance_id, v.budget) for v in vs] == [("1", "max_run_hours")]
    pricey = Instance(id="3", session_id="session-y", dph_total=1.5, created_at=now)
    vs = evaluate(b, [pricey], run_usd={}, month_usd=100, now=now)
    assert sorted(v.budget for v in vs) == ["max_dph", "max_month_usd"]
