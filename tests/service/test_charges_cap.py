"""A charge row bigger than its instance could have billed (service/money/costs.py:cap_charges): counted
at the most the rate allows, never less, and never dropped; the ledger keeps it as suspect until
the provider's bill no longer says it. The guard's side runs in tests/faults/scenarios_money.py."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.models import Instance
from comfy_lora_cloud.service.money.costs import CostLedger, known_rates
from comfy_lora_cloud.service.money.charges import CHARGE_MARGIN, CHARGE_SLACK_USD, UNKNOWN_DPH, cap_charges
from comfy_lora_cloud.service.home.state import StateStore

NOW = 1_700_000_000.0
HOUR = 3600.0
SINCE = NOW - 32 * 86400


def row(iid: str, usd: float, hours: float | None = 1.0, label: str = "lora-cloud:r1") -> dict:
    out = {"type": "instance", "source": f"instance-{iid}", "amount": usd, "metadata": {"label": label}}
    if hours is not None:
        out.update(start=NOW - hours * HOUR, end=NOW)
    return out


def most(dph: float, hours: float) -> float:
    return dph * hours * CHARGE_MARGIN + CHARGE_SLACK_USD


@pytest.mark.parametrize("usd", [0.40, 0.40 * 1.4, most(0.40, 1.0)])
def test_a_bill_the_rate_can_explain_is_taken_as_it_is(usd):
    rows, suspects = cap_charges([row("1", usd)], {"1": 0.40}, now=NOW, since=SINCE)
    assert rows[0]["amount"] == usd and suspects == []


def test_a_huge_row_counts_the_most_its_rate_allows_over_its_span():
    rows, suspects = cap_charges([row("1", 1e9, hours=3.0), row("2", 0.5)], {"1": 0.40, "2": 0.40}, now=NOW,
                                 since=SINCE)
    assert rows[0]["amount"] == pytest.approx(most(0.40, 3.0)) and rows[1]["amount"] == 0.5
    [s] = suspects
    assert (s.instance_id, s.billed_usd, s.counted_usd, s.hours) == ("1", 1e9, pytest.approx(most(0.40, 3.0)), 3.0)
    assert "instance 1 $1,000,000,000.00" in s.message and "counted as $2.80" in s.message


def test_a_span_is_counted_from_the_window_and_a_row_without_one_is_held_to_the_whole_window():
    ancient = {**row("1", 1e9), "start": 0.0}  # "since 1970": no more than the window the answer covers
    rows, _ = cap_charges([ancient, row("2", 1e9, hours=None)], {"1": 0.40, "2": 0.40}, now=NOW, since=SINCE)
    assert rows[0]["amount"] == rows[1]["amount"] == pytest.approx(most(0.40, 32 * 24))


def test_without_a_known_rate_ours_are_held_to_max_dph_and_others_are_left_alone():
    ours, theirs = row("7", 1e9), row("8", 1e9, label="my-jupyter")
    rows, suspects = cap_charges([ours, theirs], {}, now=NOW, since=SINCE, fallback_dph=2.0)
    assert rows[0]["amount"] == pytest.approx(most(2.0, 1.0)) and rows[1]["amount"] == 1e9
    assert [s.instance_id for s in suspects] == ["7"]
    # max_dph off: held to the most max_dph may be (UNKNOWN_DPH) over the whole window, never without a bound
    rows, suspects = cap_charges([ours, row("9", 6.0, hours=None)], {}, now=NOW, since=SINCE, fallback_dph=0.0)
    assert rows[0]["amount"] == pytest.approx(most(UNKNOWN_DPH, 32 * 24)) and [s.instance_id for s in suspects] == ["7"]
    assert rows[1]["amount"] == 6.0  # a realistic bill is believed


def test_rates_are_the_highest_known_and_ignore_nonsense():
    listed = [Instance(id="1", dph_total=0.4), Instance(id="2", dph_total=0.0)]
    stored = [{"id": "1", "dph_total": 0.5}, {"id": "3", "dph_total": float("nan")}, {"id": "4", "dph_total": 1.0}]
    assert known_rates(listed, stored) == {"1": 0.5, "4": 1.0}


def test_the_ledger_books_the_capped_figure_and_shows_the_suspect_until_the_bill_is_fixed(tmp_path):
    state = StateStore(tmp_path / "state.db")
    ledger = CostLedger(state, clock=lambda: NOW)
    run_of = {"1": "r1"}
    rows, suspects = cap_charges([row("1", 1e9)], {"1": 0.40}, now=NOW, since=SINCE)
    ledger.reconcile_charges(rows, run_of, NOW, suspects=suspects)
    assert ledger.run_usd("r1") == pytest.approx(most(0.40, 1.0))
    [shown] = ledger.summary(NOW).suspect_charges
    assert shown["instance_id"] == "1" and shown["billed_usd"] == 1e9 and "check the bill" in shown["message"]
    rows, suspects = cap_charges([row("1", 0.41)], {"1": 0.40}, now=NOW + 60, since=SINCE)  # vast.ai fixed it
    ledger.reconcile_charges(rows, run_of, NOW + 60, suspects=suspects)
    assert ledger.run_usd("r1") == pytest.approx(0.41) and ledger.summary(NOW + 60).suspect_charges == ()
