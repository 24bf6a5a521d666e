"""Fault scenarios for numbers that are not what they should be, in this controller's own store:
ledger lines of $1e308 (two of them sum to infinity, and a month of $inf used to destroy every
live instance), and session records with a field of the wrong type (``max_hours`` as text,
``created_at`` null), whose sessions used to outlive their hours.

A ledger line is believed only within what its instance's rate allows (``service/money/costs.py``
``line_cap``): outside it, it is reported line by line and never summed, and a run over budget by
its real spend is still caught. A damaged session record still has hours
(``service/sessions/guard.py`` ``SessionGuard._damaged_hours``): its own max_hours when readable, else
the most a session may have, from its instance's first sighting here.
"""

from __future__ import annotations

import re
from typing import Any

from comfy_lora_cloud.models import Instance, InstanceState, RunState, Session, SessionState
from comfy_lora_cloud.providers.base import session_label
from comfy_lora_cloud.settings import MAX_SESSION_HOURS

from .harness import HOUR, World
from .registry import scenario
from .scenarios_guard import PRICEY, all_of, breach, no_verdicts, ours, problem

Results = list[dict[str, Any]]


def ledger_line(w: World, iid: str, run_id: str, usd: float, *, kind: str = "gpu", source: str = "estimate") -> None:
    """A ledger row written behind the store's back (a bug, a hand edit, a corrupted page)."""
    start, end = (w.now - 60, w.now) if source == "estimate" else (w.now, w.now)
    w.sql('INSERT INTO ledger (instance_id, run_id, kind, usd, start, "end", source) VALUES (?, ?, ?, ?, ?, ?, ?)',
          iid, run_id, kind, usd, start, end, source)


def corrupt_lines_reported(count: int):
    def check(w: World, results: Results) -> None:
        lines = {p["subject"] for r in results for p in r.get("problems", [])
                 if p["kind"] == "corrupt_row" and p["subject"].startswith("ledger line ")
                 and "not counted" in p["message"]}
        assert len(lines) == count, (count, [r.get("problems") for r in results])
    return check


def finite_breach(budget: str, run_id: str, below: float):
    """The breach was found by a real figure, not by infinity: its value is below ``below``."""
    def check(w: World, results: Results) -> None:
        hits = [v["message"] for r in results for v in r.get("budgets", [])
                if v["budget"] == budget and f"(run {run_id})" in v["message"]]
        values = [float(m) for h in hits for m in re.findall(r"([-\d.]+) \$ of", h)]
        assert values and all(0 < v < below for v in values), hits
    return check


@scenario("ledger_lines_of_1e308", "two ledger lines of $1e308 (their sum is infinite), one of -$1e308, and a run "
          "over max_run_usd by its real spend",
          budgets={"max_run_usd": 1.0},
          check=all_of(corrupt_lines_reported(4), breach("max_run_usd", "spender"),
                       finite_breach("max_run_usd", "spender", 100.0), no_verdicts("max_month_usd")))
def _ledger_lines_of_1e308(w: World) -> None:
    w.treasure(["mine", "spender"])
    mine = ours(w, "mine", "a live run of ours; two $1e308 lines name its instance")
    ledger_line(w, mine, "mine", 1e308)
    ledger_line(w, mine, "mine", 1e308, kind="storage")
    spender = w.instance("spender", "die", "about $5 spent of a $1 run budget", gpu=PRICEY, age_h=2)
    w.local_run("spender", spender, seen_h_ago=2)
    w.status("spender")
    w.expect_end("spender", RunState.FAILED)
    ledger_line(w, spender, "spender", -1e308, kind="charge", source="charges")  # would hide its real spend
    ledger_line(w, spender, "spender", 1e308)


@scenario("ledger_line_past_its_rate", "a ledger line of $50,000 for an instance at cents an hour, and the month "
          "budget at $100: the line is not believed, nothing live is destroyed",
          budgets={"max_month_usd": 100.0},
          check=all_of(corrupt_lines_reported(1), no_verdicts()))
def _ledger_line_past_its_rate(w: World) -> None:
    w.treasure(["mine"])
    mine = ours(w, "mine", "a live run of ours on a cheap GPU")
    ledger_line(w, mine, "mine", 50_000.0)


# ---- session records with a field of the wrong type -------------------------------------------------
def damaged_session(w: World, sid: str, fate: str, why: str, *, age_h: float, **fields: Any) -> str:
    """A session started here ``age_h`` hours ago (its instance first seen then), whose record
    then had ``fields`` overwritten with values of the wrong type."""
    iid = w.instance(None, fate, why, label=session_label(sid), age_h=age_h)
    born = w.now - age_h * HOUR
    session = Session(id=sid, state=SessionState.READY, instance_id=iid, created_at=born, updated_at=born,
                      max_hours=4.0)
    w.store.put_session({**session.to_dict(), **fields})  # as given: the store checks on reading
    w.store.put_instance(Instance(id=iid, label=session_label(sid), state=InstanceState.RUNNING), None, seen_at=born)
    return iid


def timed_out(*session_ids: str):
    def check(w: World, results: Results) -> None:
        assert sorted(results[-1]["sessions"]["timed_out"]) == sorted(session_ids), results[-1]["sessions"]
        for sid in session_ids:
            record = w.store.get_session(sid)  # the record is whole again (readable), and ended
            assert record is not None and record.state.value == "timed_out", record
    return check


@scenario("session_record_wrong_types", "session records with max_hours as text and created_at null: their hours "
          "still hold (the record's own when readable, else the most a session may have)",
          check=all_of(timed_out("session-old", "session-nullstart"),
                       problem("corrupt_session", "session-old", f"held to {MAX_SESSION_HOURS:g} h"),
                       problem("corrupt_session", "session-young", "max_hours is 'four'"),
                       problem("corrupt_session", "session-nullstart", "created_at is None")))
def _session_record_wrong_types(w: World) -> None:
    w.treasure([])
    damaged_session(w, "session-old", "die", f"max_hours unreadable and {MAX_SESSION_HOURS + 8:g} h old: past "
                    f"the most a session may have", age_h=MAX_SESSION_HOURS + 8, max_hours="four")
    damaged_session(w, "session-nullstart", "die", "created_at null, its own 4 h: 5 h since its instance was first "
                    "seen", age_h=5, created_at=None)
    damaged_session(w, "session-young", "keep", "max_hours unreadable and created_at null, an hour old: young",
                    age_h=1, max_hours="four", created_at=None)
