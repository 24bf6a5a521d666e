"""Fault scenarios for the money the guard counts when its own records fail it (cases the
first guard scenarios did not cover): the month budget with a damaged ``state.db``, held to vast.ai's ``/charges/``; and
a huge but finite charge row, counted at the most its instance's rate allows
(``service/money/costs.py:cap_charges``).

Each row damages the store the way a full disk or a crash would, scripts the fake vast.ai's
``/charges/`` answer, and declares what the guard must do to every instance.
"""

from __future__ import annotations

import json
import subprocess

from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.providers.base import run_label

from .harness import HOUR, World, entry_point
from .registry import scenario
from .scenarios_guard import DAMAGED_HOME, PRICEY, all_of, breach, no_verdicts, problem


def damage_store(w: World) -> None:
    """Cut ``state.db`` short, as a full disk or a crash mid-copy would."""
    w.store.list_runs()  # every connection closed: the WAL is folded into state.db
    for extra in ("state.db-wal", "state.db-shm"):
        (w.home / extra).unlink(missing_ok=True)
    path = w.home / "state.db"
    path.write_bytes(path.read_bytes()[:1024])


def earlier_charge(w: World, usd: float, label: str, instance_id: int = 990001) -> dict:
    """A ``/charges/`` row for an instance destroyed earlier this month (no longer listed, so
    its rate is unknown: a row that size is believed only with max_dph 0, see cap_charges)."""
    return {"type": "instance", "source": f"instance-{instance_id}", "amount": usd, "start": w.now, "end": w.now,
            "description": f"RTX 4090 x1 instance {instance_id}", "metadata": {"label": label}}


def damaged(w: World, run_id: str, fate: str, why: str, fault: tuple[str, dict], **instance) -> None:
    """One live run of ours, the fake vast.ai told ``fault`` (a control verb and its body), then
    ``state.db`` cut short."""
    w.treasure([run_id])
    live_run(w, run_id, fate, why, **instance)
    w.fake.call(*fault)
    damage_store(w)


def not_suspect(results, instance_id: str) -> None:
    """Another account holder's row is not ours to judge: no problem names it."""
    named = [p for r in results for p in r.get("problems", []) if instance_id in p["subject"]]
    assert not named, named


def live_run(w: World, run_id: str, fate: str, why: str, **kwargs) -> str:
    iid = w.instance(run_id, fate, why, **kwargs)
    w.local_run(run_id, iid)
    w.status(run_id)
    if fate == "die":
        w.expect_end(run_id, RunState.FAILED)
    return iid


@scenario("db_damaged_month_from_charges", "state.db is damaged and this month's bill, as /charges/ shows it, is "
          "over max_month_usd (an instance destroyed earlier cost $6 of a $5 month)",
          budgets={"max_month_usd": 5.0, "max_dph": 0},
          expect_exit=DAMAGED_HOME,
          check=all_of(breach("max_month_usd", "spender"), problem("state_store", text="1 instance(s) gone before")))
def _db_damaged_month_from_charges(w: World) -> None:
    damaged(w, "spender", "die", "the month is over budget by the provider's bill; the store cannot say so",
            ("charges", {"extra_rows": [earlier_charge(w, 6.0, run_label("earlier"))]}))


@scenario("db_damaged_month_counts_only_ours", "state.db is damaged; /charges/ bills $1000 for an instance that is "
          "not ours (the user's own machine): the month budget counts only our instances",
          budgets={"max_month_usd": 50.0},
          expect_exit=DAMAGED_HOME,
          check=all_of(no_verdicts("max_month_usd"), problem("state_store", text="0 instance(s) gone before"),
                       lambda w, r: not_suspect(r, "990002")))
def _db_damaged_month_counts_only_ours(w: World) -> None:
    damaged(w, "mine", "keep", "a live run of ours; the $1000 is not ours",
            ("charges", {"extra_rows": [earlier_charge(w, 1000.0, "my-own-jupyter-box", 990002)]}))


@scenario("db_damaged_and_charges_unavailable", "state.db is damaged and /charges/ answers 503 through every retry: "
          "the month budget cannot be checked (and says so), max $/hr still holds",
          budgets={"max_dph": 1.0},
          expect_exit=DAMAGED_HOME,
          check=all_of(problem("state_store", text="charges could not be read"), breach("max_dph", "pricey")))
def _db_damaged_and_charges_unavailable(w: World) -> None:
    damaged(w, "pricey", "die", "above max_dph",
            ("faults", {"n": 6, "status": 503, "path_contains": "/charges", "retry_after": 0.01}), gpu=PRICEY)


@scenario("db_damaged_charges_partial", "state.db is damaged and /charges/ paging never ends: the rows it did show "
          "($6 of a $5 month) are a lower bound, and already over budget",
          budgets={"max_month_usd": 5.0, "max_dph": 0},
          expect_exit=DAMAGED_HOME,
          check=all_of(breach("max_month_usd", "spender"), problem("charges", text="repeats"),
                       problem("state_store", text="a lower bound")))
def _db_damaged_charges_partial(w: World) -> None:
    damaged(w, "spender", "die", "the part of the bill that could be read is over the month's budget",
            ("charges", {"next_token": "same", "extra_rows": [earlier_charge(w, 6.0, run_label("earlier"))]}))


# ---- a huge but finite charge ----------------------------------------------------------------------
def created_at(w: World, iid: str) -> float:
    return next(i["created_at"] for i in w.fake.call("state")["instances"] if str(i["id"]) == iid)


def huge_row(w: World, iid: str, usd: float = 1e9) -> dict:
    """A row billing ``usd`` for the instance's life so far (its own genuine row stays too)."""
    return {"type": "instance", "source": f"instance-{iid}", "amount": usd, "start": created_at(w, iid),
            "end": w.now, "description": f"instance {iid}", "metadata": {"label": "lora-cloud:x"}}


def ledger_usd(w: World, iid: str) -> float:
    return sum(c.usd for c in w.store.costs() if c.instance_id == iid)


def suspect_shown(w: World, iid: str) -> dict:
    """What ``lora-cloud costs`` says about the suspect row (from the ledger, not vast.ai)."""
    proc = subprocess.run(entry_point() + ["--json", "costs", "--offline"], capture_output=True, text=True,
                          env=w.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = [s for s in json.loads(proc.stdout)["suspect_charges"] if s["instance_id"] == iid]
    assert len(shown) == 1 and shown[0]["billed_usd"] == 1e9, shown
    human = subprocess.run(entry_point() + ["costs", "--offline"], capture_output=True, text=True, env=w.env,
                           timeout=60)
    assert f"suspect: vast.ai billed instance {iid} $1,000,000,000.00" in human.stdout, human.stdout
    return shown[0]


def _huge_kept(w: World, results) -> None:
    problem("charges", f"/charges/instance-{w.cheap}", "could bill at most")(w, results)
    no_verdicts("max_month_usd")(w, results)
    no_verdicts("max_run_usd")(w, results)
    shown = suspect_shown(w, w.cheap)
    # counted at the most an hour at its rate allows (x1.5, + $1), on top of its genuine row
    most = w.dph(w.cheap) * 1.0 * 1.5 + 1.0
    assert abs(shown["counted_usd"] - most) < 0.01, (shown, most)
    assert most < ledger_usd(w, w.cheap) < most + w.dph(w.cheap) * 1.1, ledger_usd(w, w.cheap)


@scenario("charges_huge_but_finite", "a /charges/ row bills $1e9 for an hour of a $0.1/h instance: it is counted at "
          "the most the rate allows, reported and shown as suspect, and no live run is destroyed for it",
          check=_huge_kept)
def _charges_huge_but_finite(w: World) -> None:
    w.treasure(["cheap"])
    w.cheap = w.instance("cheap", "keep", "a live run whose bill has one absurd row", age_h=1)
    w.local_run("cheap", w.cheap, seen_h_ago=1)
    w.status("cheap")
    w.fake.call("charges", {"extra_rows": [huge_row(w, w.cheap)]})


@scenario("charges_huge_still_counts", "a $1e9 row for a run launched elsewhere 2 h ago on a $2.7/h GPU: counted at "
          "the most 2 h at that rate allows, which is over the run's $12 (the genuine bill alone, $5.4, is not)",
          budgets={"max_run_usd": 12.0},
          check=lambda w, r: (breach("max_run_usd", "pricey")(w, r),
                              problem("charges", f"/charges/instance-{w.pricey}", "counted as")(w, r)))
def _charges_huge_still_counts(w: World) -> None:
    w.treasure(["pricey"])
    w.pricey = live_run(w, "pricey", "die", "its bill, capped at what its rate allows, is over max_run_usd",
                        gpu=PRICEY, age_h=2)
    w.fake.call("charges", {"extra_rows": [huge_row(w, w.pricey)]})


@scenario("db_damaged_huge_charge", "state.db is damaged and /charges/ bills $1e9 for an instance destroyed earlier "
          "(no rate known): it is held to max_dph for its span, and the month budget holds without destroying",
          budgets={"max_month_usd": 50.0},
          expect_exit=DAMAGED_HOME,
          check=all_of(no_verdicts("max_month_usd"), problem("charges", "/charges/instance-990003", "counted as"),
                       problem("state_store", text="1 instance(s) gone before")))
def _db_damaged_huge_charge(w: World) -> None:
    row = earlier_charge(w, 1e9, run_label("earlier"), 990003)
    row["start"] = w.now - HOUR  # an hour at max_dph ($20) x1.5 + $1: $31, under the $50 month
    damaged(w, "mine", "keep", "a live run; the absurd row is another instance's", ("charges", {"extra_rows": [row]}))


# ---- a run's own max_run_usd ---------------------------------------------------------------------
def own_budget(w: World, run_id: str, usd: float) -> None:
    """The run's record says its own max_run_usd, as ``train start`` or the Launch node record it."""
    run = w.store.get_run(run_id)
    w.store.put_run(run.__class__(**{**run.to_dict(), "spec": {**run.spec, "max_run_usd": usd}}))


def two_spenders(w: World) -> tuple[str, str]:
    """Two runs of ours, each about $5.4 into a $2.7/h GPU (2 h, on our clock too)."""
    w.treasure(["own", "plain"])
    ids = []
    for run_id in ("own", "plain"):
        iid = w.instance(run_id, "keep", "placeholder", gpu=PRICEY, age_h=2)
        w.local_run(run_id, iid, seen_h_ago=2)
        w.status(run_id)
        ids.append(iid)
    return ids[0], ids[1]


def _fate(w: World, iid: str, run_id: str, fate: str, why: str) -> None:
    w.fates[iid], w.why[iid] = fate, why
    if fate == "die":
        w.expect_end(run_id, RunState.FAILED)


@scenario("run_own_budget_lower", "a run launched with its own max_run_usd of $1 (the setting allows $1000) is "
          "stopped at $1; a run without one is held to the setting", check=breach("max_run_usd", "own"))
def _run_own_budget_lower(w: World) -> None:
    own, plain = two_spenders(w)
    own_budget(w, "own", 1.0)
    _fate(w, own, "own", "die", "about $5 spent of its own $1 budget")
    _fate(w, plain, "plain", "keep", "about $5 spent of the setting's $1000")


@scenario("run_own_budget_higher", "a run launched with its own max_run_usd of $100 goes on past the setting's $2; "
          "a run without one is stopped at $2", budgets={"max_run_usd": 2.0}, check=breach("max_run_usd", "plain"))
def _run_own_budget_higher(w: World) -> None:
    own, plain = two_spenders(w)
    own_budget(w, "own", 100.0)
    _fate(w, own, "own", "keep", "about $5 spent of its own $100 budget")
    _fate(w, plain, "plain", "die", "about $5 spent of the setting's $2")
