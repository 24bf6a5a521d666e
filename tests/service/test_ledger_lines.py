"""The ledger's lines are summed only within what their instance's rate allows
(service/money/costs.py ``CostLedger.lines``, ``line_cap``): a line outside it is a corrupt row, handed
to ``on_corrupt`` and never summed, so every sum of money is finite and bounded by the rates."""

from __future__ import annotations

import json
import math

import pytest

from comfy_lora_cloud.models import Cost, Instance, InstanceState
from comfy_lora_cloud.service.money.costs import CostLedger, Lifetime, line_cap, usd_in
from comfy_lora_cloud.service.money.charges import CHARGE_MARGIN, CHARGE_SLACK_USD, CHARGES_WINDOW_S, UNKNOWN_DPH
from comfy_lora_cloud.service.home.state import StateStore

NOW = 1_750_000_000.0  # mid-month
HOUR = 3600.0


@pytest.fixture
def ledger(tmp_path):
    state = StateStore(tmp_path / "state.db")
    state.put_instance(Instance(id="1", run_id="r1", state=InstanceState.RUNNING, dph_total=0.40), "r1",
                       seen_at=NOW - 2 * HOUR)
    return CostLedger(state, clock=lambda: NOW)


def _line(usd: float, *, iid: str = "1", run_id: str = "r1", hours: float = 1.0, source: str = "estimate") -> Cost:
    start = NOW - hours * HOUR if source == "estimate" else NOW
    return Cost(iid, run_id, "gpu" if source == "estimate" else "charge", usd, start, NOW, source)


def test_two_lines_of_1e308_are_reported_and_not_summed(ledger):
    ledger.state.add_cost(_line(0.40))  # the real hour
    ledger.state.add_cost(_line(1e308))
    ledger.state.add_cost(_line(1e308))
    ledger.state.add_cost(_line(-1e308, source="charges"))
    seen: list = []
    assert ledger.month_usd(NOW, on_corrupt=seen.append) == pytest.approx(0.40)
    assert len(seen) == 3 and all("not counted" in e.message and e.details["line"] for e in seen)
    assert ledger.run_usd("r1", on_corrupt=lambda exc: None) == pytest.approx(0.40)
    summary = ledger.summary(NOW)
    assert summary.month_usd == pytest.approx(0.40) and len(summary.corrupt_lines) == 3
    json.dumps(summary.to_dict(), allow_nan=False)  # nothing infinite reaches the sidebar


def test_a_line_is_held_to_its_rate_over_its_span(ledger):
    most = 0.40 * 1.0 * CHARGE_MARGIN + CHARGE_SLACK_USD
    ledger.state.add_cost(_line(most))  # at the bound: believed
    ledger.state.add_cost(_line(most * 1.01))  # past it: a corrupt row
    ledger.state.add_cost(_line(-0.01))  # an estimate below 0
    seen: list = []
    assert ledger.run_usd("r1", on_corrupt=seen.append) == pytest.approx(most)
    assert len(seen) == 2 and "$0.400/h" in seen[0].message


def test_a_charge_correction_may_be_negative_within_the_instance_s_life(ledger):
    ledger.state.add_cost(_line(-3.0, source="charges"))  # the estimate was $3 too high: believed
    assert ledger.run_usd("r1") == pytest.approx(-3.0)
    life = Lifetime(0.40, NOW - 2 * HOUR, None)
    assert line_cap(_line(0.0, source="charges"), life, NOW) == pytest.approx(
        0.40 * (2 * HOUR + CHARGES_WINDOW_S) / HOUR * CHARGE_MARGIN + CHARGE_SLACK_USD)


def test_an_instance_without_a_known_rate_is_held_to_the_most_max_dph_may_be(ledger):
    seen: list = []
    ledger.state.add_cost(_line(UNKNOWN_DPH * 0.5, iid="ghost", run_id="r2"))  # an hour at half the ceiling
    ledger.state.add_cost(_line(1e12, iid="ghost", run_id="r2"))
    assert ledger.run_usd("r2", on_corrupt=seen.append) == pytest.approx(UNKNOWN_DPH * 0.5)
    assert len(seen) == 1 and "no known rate" in seen[0].message


def test_reconciling_charges_ignores_lines_it_cannot_believe(ledger):
    ledger.state.add_cost(_line(0.40))
    ledger.state.add_cost(_line(1e308))
    booked = ledger.reconcile_charges([{"source": "instance-1", "amount": 0.50}], {"1": "r1"}, NOW)
    assert booked == pytest.approx(0.10) and math.isfinite(ledger.run_usd("r1"))


def test_usd_in_does_not_overflow_on_a_huge_span():
    line = Cost("1", None, "gpu", 1e300, -1e308, 1e308)
    assert math.isfinite(usd_in([line], NOW - HOUR, NOW))


def test_lora_cloud_costs_says_which_lines_it_did_not_count(tmp_path, clean_env):
    import os
    import subprocess

    from tests.cli.conftest import _entry_point

    state = StateStore(clean_env / "state.db")
    state.add_cost(Cost("1", "r1", "gpu", 1e308, NOW - HOUR, NOW))
    proc = subprocess.run(_entry_point() + ["costs", "--offline"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LORA_CLOUD_HOME": str(clean_env)})
    assert proc.returncode == 0, proc.stderr
    assert "not counted: ledger line 1 books $1e+308" in proc.stdout and "inf" not in proc.stdout
