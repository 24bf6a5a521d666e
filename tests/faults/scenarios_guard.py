"""Fault scenarios for the guard (reconcile + budget watchdog).

Each row breaks one thing the way an attacker, a crash or a flaky provider would, next to
records that are fine, and declares what the guard must do to every instance. Most rows also
carry a budget breach or an orphan elsewhere, to show that one bad record never stops the
enforcement of the others.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from comfy_lora_cloud.models import Instance, RunState
from comfy_lora_cloud.providers.base import run_label

from .harness import HOUR, World
from .registry import scenario

Results = list[dict[str, Any]]
DAMAGED_HOME = 9  # `instances reconcile` did its job on a damaged home (settings or state store)
PRICEY = "H200"  # about $2.7/hr in the fake's offer book; the cheapest offers cost about $0.11/hr


# ---- checks ---------------------------------------------------------------------------------------
def problem(kind: str, subject: str | None = None, text: str = "") -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        found = [p for r in results for p in r.get("problems", []) if p["kind"] == kind
                 and (subject is None or p["subject"] == subject) and text in p["message"]]
        assert found, f"no {kind} problem about {subject} ({text!r}) in {[r.get('problems') for r in results]}"
    return check


def breach(budget: str, run_id: str) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        hits = [v for r in results for v in r.get("budgets", []) if v["level"] == "breach" and v["budget"] == budget]
        assert any(f"(run {run_id})" in v["message"] for v in hits), (budget, run_id, results)
    return check


def local_state(run_id: str, state: RunState) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        assert w.store.get_run(run_id).state is state, (run_id, w.store.get_run(run_id))
    return check


def reported(field: str, ids: Callable[[World], list[str]]) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        assert sorted(results[-1]["reconcile"][field]) == sorted(ids(w)), (field, results[-1]["reconcile"])
    return check


def no_verdicts(budget: str | None = None) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        hits = [v for r in results for v in r.get("budgets", []) if budget is None or v["budget"] == budget]
        assert not hits, hits
    return check


def stderr_says(text: str) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        assert text in results[0].get("stderr", ""), results
    return check


def storm_struck(w: World, results: Results) -> None:
    assert w.fake.call("state")["faults"] > 0, "the storm never struck"


def all_of(*checks: Callable[[World, Results], None]) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        for c in checks:
            c(w, results)
    return check


def late_run(w: World, run_id: str = "late") -> str:
    """A run of ours 9 h into a 6 h budget: its instance must go (and the run is failed in the bucket)."""
    iid = w.instance(run_id, "die", "9 h into a 6 h max_run_hours", age_h=9)
    w.local_run(run_id, iid, seen_h_ago=9)
    w.status(run_id)
    w.expect_end(run_id, RunState.FAILED)
    return iid


def pricey_run(w: World, run_id: str = "pricey") -> str:
    """A live run of ours on a GPU above max_dph (the row sets max_dph 1.0)."""
    iid = w.instance(run_id, "die", "above max_dph", gpu=PRICEY)
    w.local_run(run_id, iid)
    w.status(run_id)
    w.expect_end(run_id, RunState.FAILED)
    return iid


def ours(w: World, run_id: str, why: str = "a live run of ours") -> str:
    iid = w.instance(run_id, "keep", why)
    w.local_run(run_id, iid)
    w.status(run_id)
    return iid


def orphan(w: World, run_id: str = "orphan") -> str:
    """An instance of this bucket (its id carries the bucket's) that no run owns anywhere."""
    return w.instance(w.tagged(run_id), "die", "this bucket's, and no run owns it anywhere")


# ---- status.json that is not a status ---------------------------------------------------------------
@scenario("status_not_json", "a host writes a status.json that is not JSON; reconcile goes on",
          check=all_of(problem("corrupt_status", "garbled", "not JSON"), reported("destroyed", lambda w: [w.orphan])))
def _status_not_json(w: World) -> None:
    w.treasure(["garbled"])
    ours(w, "garbled", "live here; the bucket's word is garbage but the store knows it")
    w.raw_status("garbled", "{not json at all")
    w.orphan = orphan(w)


@scenario("status_unknown_state", "a newer trainer reports a state this version does not know; another run "
          "is 9 h into a 6 h limit", check=all_of(problem("corrupt_status", "newer", "unknown state"),
                                                   breach("max_run_hours", "late")))
def _status_unknown_state(w: World) -> None:
    w.treasure(["newer", "late"])
    w.instance("newer", "keep", "another controller's run whose status cannot be read: never destroyed on doubt")
    w.raw_status("newer", json.dumps({"run_id": "newer", "state": "paused_for_v2", "updated_at": w.now}))
    late_run(w)


@scenario("status_is_a_list", "status.json is a JSON list; next to it a trainer reported done but still bills",
          check=all_of(problem("corrupt_status", "listy", "not an object"), local_state("finished", RunState.DONE)))
def _status_is_a_list(w: World) -> None:
    w.treasure(["listy", "finished"])
    ours(w, "listy")
    w.raw_status("listy", "[1, 2, 3]")
    iid = w.instance("finished", "die", "its trainer reported done; its self-destroy failed")
    w.local_run("finished", iid)
    w.status("finished", RunState.DONE)


@scenario("status_huge_numbers", "status.json with numbers past any sane range (1e400, 10**30)",
          check=all_of(problem("corrupt_status", "huge1"), problem("corrupt_status", "huge2", "31 digits")))
def _status_huge_numbers(w: World) -> None:
    w.treasure(["huge1", "huge2"])
    w.instance("huge1", "keep", "unreadable status: doubt")
    w.raw_status("huge1", '{"run_id": "huge1", "state": "training", "step": 1e400, "updated_at": %f}' % w.now)
    w.instance("huge2", "keep", "unreadable status: doubt")
    w.raw_status("huge2", json.dumps({"run_id": "huge2", "state": "training", "total_steps": 10 ** 30,
                                      "updated_at": w.now}))
    orphan(w)


@scenario("status_wrong_types", "status.json fields of the wrong type (message a number, loss a word)",
          budgets={"max_dph": 1.0}, check=all_of(problem("corrupt_status", "typed"), breach("max_dph", "pricey")))
def _status_wrong_types(w: World) -> None:
    w.treasure(["typed", "pricey"])
    w.instance("typed", "keep", "unreadable status: doubt")
    w.raw_status("typed", json.dumps({"run_id": "typed", "state": "training", "message": 12, "loss": "low",
                                      "updated_at": w.now}))
    pricey_run(w)


@scenario("status_nan_literal", "status.json with NaN (Python writes it, JSON does not allow it)",
          check=problem("corrupt_status", "nan", "not JSON"))
def _status_nan_literal(w: World) -> None:
    w.treasure(["nan"])
    ours(w, "nan")
    w.raw_status("nan", '{"run_id": "nan", "state": "training", "loss": NaN, "updated_at": %f}' % w.now)
    orphan(w)


@scenario("status_names_another_run", "a host copies another run's live status.json into its own run folder",
          check=problem("corrupt_status", "copycat", "names run"))
def _status_names_another_run(w: World) -> None:
    w.treasure(["copycat"])
    w.instance("copycat", "keep", "unreadable status: doubt")
    w.raw_status("copycat", json.dumps({"run_id": "someone-else", "state": "training", "updated_at": w.now}))
    orphan(w)


# ---- the state store ---------------------------------------------------------------------------------
@scenario("db_row_unknown_state", "a state.db row with an unknown run state; another run is past its hours",
          check=all_of(problem("corrupt_run", "odd", "unknown state"), breach("max_run_hours", "late"),
                       reported("destroyed", lambda w: [w.orphan])))
def _db_row_unknown_state(w: World) -> None:
    w.treasure(["odd", "late"])
    w.local_run("odd", w.instance("odd", "keep", "its row cannot be read: doubt"))
    w.sql("UPDATE runs SET state = 'hibernating' WHERE id = ?", "odd")
    late_run(w)
    w.orphan = orphan(w)


@scenario("db_spec_not_json", "a state.db row whose spec is not JSON; another run's trainer reported done",
          check=all_of(problem("corrupt_run", "specless", "not JSON"), local_state("finished", RunState.DONE)))
def _db_spec_not_json(w: World) -> None:
    w.treasure(["specless", "finished"])
    w.local_run("specless", w.instance("specless", "keep", "its row cannot be read: doubt"))
    w.sql("UPDATE runs SET spec = '{oops' WHERE id = ?", "specless")
    iid = w.instance("finished", "die", "its trainer reported done")
    w.local_run("finished", iid)
    w.status("finished", RunState.DONE)


@scenario("db_non_numeric_price", "a state.db row whose dph is a word; another instance is above max_dph",
          budgets={"max_dph": 1.0}, check=all_of(problem("corrupt_run", "wordy", "not a number"),
                                                  breach("max_dph", "pricey")))
def _db_non_numeric_price(w: World) -> None:
    w.treasure(["wordy", "pricey"])
    w.local_run("wordy", w.instance("wordy", "keep", "its row cannot be read: doubt"))
    w.sql("UPDATE runs SET dph = 'expensive' WHERE id = ?", "wordy")
    pricey_run(w)


@scenario("db_ledger_line_not_a_number", "a ledger line whose amount is a word; a run is over max_run_usd",
          budgets={"max_run_usd": 1.0}, check=all_of(problem("corrupt_row", "ledger", "not a number"),
                                                      breach("max_run_usd", "spender")))
def _db_ledger_line(w: World) -> None:
    w.treasure(["spender", "fine"])
    iid = w.instance("spender", "die", "about $5 spent of a $1 run budget", gpu=PRICEY, age_h=2)
    w.local_run("spender", iid, seen_h_ago=2)
    w.status("spender")
    w.expect_end("spender", RunState.FAILED)
    fine = ours(w, "fine")
    w.sql('INSERT INTO ledger (instance_id, run_id, kind, usd, start, "end") VALUES (?, ?, ?, ?, ?, ?)',
          fine, "fine", "gpu", "lots", 0, 1)


@scenario("db_kv_not_a_number", "the ledger cursor and the grace timer hold words, not times",
          check=all_of(problem("corrupt_row", text="not a number"), reported("destroyed", lambda w: [w.orphan])))
def _db_kv(w: World) -> None:
    w.treasure(["cursor"])
    iid = ours(w, "cursor")
    w.orphan = orphan(w)
    w.sql("INSERT INTO kv (key, value) VALUES (?, ?)", f"ledger:accrued:vast:{iid}", "yesterday")
    w.sql("INSERT INTO kv (key, value) VALUES (?, ?)", f"reconcile:unowned_since:{w.orphan}", "soon")


def _damaged_store(w: World, damage: Callable[[Any], None]) -> None:
    w.treasure(["mine", "pricey"])
    ours(w, "mine", "ours, but the store that says so is damaged: doubt")
    pricey_run(w)
    w.instance(w.tagged("stray"), "die", "no run anywhere: the store is set aside and rebuilt, and the orphan "
                                         "judged as usual")
    w.store.list_runs()  # every connection closed: the WAL is folded into state.db
    path = w.home / "state.db"
    for extra in ("state.db-wal", "state.db-shm"):
        (w.home / extra).unlink(missing_ok=True)
    damage(path)


@scenario("db_truncated", "state.db cut short (a full disk, a crash mid-copy): set aside and rebuilt, max $/hr holds",
          budgets={"max_dph": 1.0}, expect_exit=DAMAGED_HOME,
          check=all_of(problem("state_store", text="set aside"), breach("max_dph", "pricey")))
def _db_truncated(w: World) -> None:
    _damaged_store(w, lambda path: path.write_bytes(path.read_bytes()[:1024]))


@scenario("db_overwritten", "state.db overwritten with garbage: set aside and rebuilt, max $/hr holds",
          budgets={"max_dph": 1.0}, expect_exit=DAMAGED_HOME,
          check=all_of(problem("state_store", text="set aside"), breach("max_dph", "pricey")))
def _db_overwritten(w: World) -> None:
    _damaged_store(w, lambda path: path.write_bytes(b"this is not a database " * 400))


# ---- /charges/ garbage -------------------------------------------------------------------------------
@scenario("charges_amount_text", "a /charges/ row says amount 'abc'; another run is past its hours",
          check=all_of(problem("charges", text="'abc' refused"), breach("max_run_hours", "late")))
def _charges_amount_text(w: World) -> None:
    w.treasure(["mine", "late"])
    iid = ours(w, "mine")
    late_run(w)
    w.fake.call("charges", {"extra_rows": [{"type": "instance", "source": f"instance-{iid}", "amount": "abc"}]})


@scenario("charges_results_not_a_list", "/charges/ answers results: 'garbage'",
          check=all_of(problem("charges", text="not a list"), breach("max_run_hours", "late")))
def _charges_results_garbage(w: World) -> None:
    w.treasure(["late"])
    late_run(w)
    w.fake.call("charges", {"replace": {"success": True, "results": "garbage", "next_token": None}})


@scenario("charges_body_is_a_list", "/charges/ answers a JSON list instead of an object",
          budgets={"max_dph": 1.0}, check=all_of(problem("charges", text="not an object"), breach("max_dph", "pricey")))
def _charges_body_list(w: World) -> None:
    w.treasure(["pricey"])
    pricey_run(w)
    w.fake.call("charges", {"replace": [1, 2, 3]})


@scenario("charges_next_token_repeats", "/charges/ paging whose next_token repeats (it used to loop forever)",
          check=all_of(problem("charges", text="repeats"), breach("max_run_hours", "late")))
def _charges_token_repeats(w: World) -> None:
    w.treasure(["late"])
    late_run(w)
    w.fake.call("charges", {"next_token": "same"})


@scenario("charges_next_token_endless", "/charges/ paging that never ends (a new token every page)",
          check=all_of(problem("charges", text="did not end"), breach("max_run_hours", "late")))
def _charges_token_endless(w: World) -> None:
    w.treasure(["late"])
    late_run(w)
    w.fake.call("charges", {"next_token": "endless"})


@scenario("charges_negative_amount", "a /charges/ row of -$10,000 must not switch the month budget off",
          # a cap a few seconds of this GPU reach, so the month's first minutes (spend is counted
          # pro rata from the 1st) cannot hide the breach
          budgets={"max_month_usd": 0.005},
          check=all_of(problem("charges", text="-10000"), breach("max_month_usd", "spender")))
def _charges_negative(w: World) -> None:
    w.treasure(["spender"])
    iid = w.instance("spender", "die", "this month's spend is over max_month_usd", gpu=PRICEY, age_h=0.2)
    w.local_run("spender", iid, seen_h_ago=0.2)
    w.status("spender")
    w.expect_end("spender", RunState.FAILED)
    w.fake.call("charges", {"extra_rows": [{"type": "instance", "source": f"instance-{iid}", "amount": -10000}]})


@scenario("charges_infinite_and_nan", "/charges/ rows of Infinity and NaN dollars",
          check=all_of(problem("charges", text="inf"), problem("charges", text="nan"),
                       breach("max_run_hours", "late")))
def _charges_inf_nan(w: World) -> None:
    w.treasure(["mine", "late"])
    iid = ours(w, "mine")
    late = late_run(w)
    w.fake.call("charges", {"extra_rows": [{"source": f"instance-{iid}", "amount": float("inf")},
                                           {"source": f"instance-{late}", "amount": float("nan")}]})


@scenario("charges_odd_rows", "/charges/ rows with amount true, amount null, no source, not an object",
          check=all_of(problem("charges", text="True"), problem("charges", text="no source"),
                       breach("max_run_hours", "late")))
def _charges_odd_rows(w: World) -> None:
    w.treasure(["mine", "late"])
    iid = ours(w, "mine")
    late_run(w)
    w.fake.call("charges", {"extra_rows": [{"source": f"instance-{iid}", "amount": True},
                                           {"source": f"instance-{iid}", "amount": None},
                                           {"amount": 3.0}, "row"]})


@scenario("charges_unavailable", "/charges/ answers 503 through every retry",
          check=all_of(problem("charges", "/charges/", "could not read"), breach("max_run_hours", "late")))
def _charges_503(w: World) -> None:
    w.treasure(["late"])
    late_run(w)
    w.fake.call("faults", {"n": 6, "status": 503, "path_contains": "/charges", "retry_after": 0.01})


# ---- clocks ------------------------------------------------------------------------------------------
@scenario("skew_provider_behind", "the provider's clock is 7 h behind: a 30 s old instance looks 7 h old",
          check=no_verdicts("max_run_hours"))
def _skew_behind(w: World) -> None:
    w.treasure(["young"])
    iid = w.instance("young", "keep", "30 s old on our clock, 7 h old by the provider's start_date",
                     age_h=30 / HOUR, skew_h=-7)
    w.local_run("young", iid, seen_h_ago=30 / HOUR)
    w.status("young")


@scenario("skew_provider_ahead", "the provider's clock is 7 h ahead: a 7 h old instance looks brand new",
          check=breach("max_run_hours", "old"))
def _skew_ahead(w: World) -> None:
    w.treasure(["old"])
    iid = w.instance("old", "die", "7 h old on our clock (6 h budget), new by the provider's start_date",
                     age_h=7, skew_h=7)
    w.local_run("old", iid, seen_h_ago=7)
    w.status("old")
    w.expect_end("old", RunState.FAILED)


@scenario("skew_first_sight_of_foreign_run", "another laptop's live run whose start_date is 10 h back: its age "
          "counts from when this controller first saw it", check=reported("owned", lambda w: [w.theirs]))
def _skew_foreign(w: World) -> None:
    w.treasure(["theirs"])
    w.theirs = w.instance("theirs", "keep", "live in the bucket; first seen by us just now", skew_h=-10)
    w.status("theirs")


@scenario("trainer_clock_behind", "the trainer host's clock is 7 h behind: its fresh status looks 7 h old",
          check=reported("owned", lambda w: [w.theirs]))
def _trainer_clock_behind(w: World) -> None:
    w.treasure(["theirs"])
    w.theirs = w.instance("theirs", "keep", "live in the bucket; the object was written just now")
    w.status("theirs", ago_s=7 * HOUR)
    orphan(w)


# ---- one run, one instance -------------------------------------------------------------------------
@scenario("duplicate_label_recorded_kept", "a second instance with a run's label (a lost create retried): the "
          "one the run records stays, the other goes", check=reported("owned", lambda w: [w.kept]))
def _dup_recorded(w: World) -> None:
    w.treasure(["dup"])
    w.instance("dup", "die", "older, but not the instance run dup records", age_h=0.5)
    w.kept = w.instance("dup", "keep", "the instance run dup records")
    w.local_run("dup", w.kept)
    w.status("dup")


@scenario("duplicate_label_first_seen_kept", "two instances for another laptop's run: the one this controller "
          "saw first stays", check=reported("owned", lambda w: [w.kept]))
def _dup_first_seen(w: World) -> None:
    w.treasure(["twin"])
    w.instance("twin", "die", "a second instance of run twin, seen later")
    w.kept = w.instance("twin", "keep", "the instance of run twin this controller saw an hour ago")
    w.store.put_instance(Instance(id=w.kept, label=run_label("twin"), run_id="twin"), "twin", seen_at=w.now - HOUR)
    w.status("twin")


@scenario("done_but_alive", "the trainer reported done, its self-destroy failed, the instance bills on",
          check=all_of(local_state("finished", RunState.DONE), reported("ended_runs", lambda w: ["finished"])))
def _done_but_alive(w: World) -> None:
    w.treasure(["finished", "mine"])
    iid = w.instance("finished", "die", "its trainer reported done")
    w.local_run("finished", iid)
    w.status("finished", RunState.DONE, lora="loras/keep.safetensors")
    ours(w, "mine")


@scenario("failed_in_bucket_elsewhere", "another laptop's run failed in the bucket; its instance bills on",
          check=reported("destroyed", lambda w: [w.failed]))
def _failed_elsewhere(w: World) -> None:
    w.treasure(["broken"])
    w.failed = w.instance("broken", "die", "its trainer reported failed")
    w.status("broken", RunState.FAILED, error="kohya exited 1")


# ---- instances that vanished -----------------------------------------------------------------------
@scenario("vanished_lost_and_done", "two instances vanish: one run is lost (in the bucket too), the other had "
          "reported done", check=all_of(local_state("gone", RunState.LOST), local_state("finished", RunState.DONE),
                                        reported("lost_runs", lambda w: ["gone"]),
                                        reported("ended_runs", lambda w: ["finished"])))
def _vanished(w: World) -> None:
    w.treasure(["gone", "finished"])
    for run_id, state in (("gone", RunState.TRAINING), ("finished", RunState.DONE)):
        iid = w.instance(run_id, "die", "vanished before the pass (host gone)")
        w.local_run(run_id, iid)
        w.status(run_id, state)
        w.fake.call("vanish", {"id": int(iid)})
    w.expect_end("gone", RunState.LOST)


@scenario("vanished_with_garbage_status", "an instance vanishes and its run's status.json is garbage",
          check=local_state("gone", RunState.LOST))
def _vanished_garbage(w: World) -> None:
    w.treasure(["gone"])
    iid = w.instance("gone", "die", "vanished")
    w.local_run("gone", iid)
    w.raw_status("gone", b"\xff\xfe garbage")
    w.fake.call("vanish", {"id": int(iid)})
    w.expect_end("gone", RunState.LOST)


@scenario("launch_died_before_create", "a launch recorded its intent and died before renting",
          check=local_state("stalled", RunState.FAILED))
def _launch_died(w: World) -> None:
    w.treasure(["stalled", "mine"])
    w.local_run("stalled", None, state=RunState.LAUNCHING)
    w.status("stalled", RunState.LAUNCHING)
    w.sql("UPDATE runs SET updated_at = ? WHERE id = ?", w.now - HOUR, "stalled")
    w.expect_end("stalled", RunState.FAILED)
    ours(w, "mine")


# ---- who owns it --------------------------------------------------------------------------------------
@scenario("live_elsewhere_from_the_cli", "the CLI's reconcile used to destroy a run live from another laptop",
          check=all_of(reported("owned", lambda w: [w.theirs]), reported("destroyed", lambda w: [w.orphan])))
def _live_elsewhere(w: World) -> None:
    w.treasure(["laptop2"])
    w.theirs = w.instance("laptop2", "keep", "live in the bucket, launched from another laptop")
    w.status("laptop2")
    w.orphan = orphan(w)


@scenario("bucket_unreachable", "the bucket cannot be read: nobody's run is destroyed on that doubt, and "
          "max $/hr still holds", budgets={"max_dph": 1.0},
          env={"LORA_CLOUD_STORAGE": "gs://no-such-bucket-for-lora-cloud"},
          check=all_of(problem("unattributed", text="run laptop2 is (its label predates bucket ids) while the "
                                                     "bucket cannot be read"),
                       problem("bucket", "bucket id", "cannot be read"), breach("max_dph", "pricey")))
def _bucket_unreachable(w: World) -> None:
    w.treasure(["laptop2"])
    w.instance("laptop2", "keep", "the bucket cannot vouch for it: doubt")
    w.instance("nobody", "keep", "the bucket cannot vouch for it: doubt")
    ours(w, "mine")
    iid = w.instance("pricey", "die", "above max_dph", gpu=PRICEY)
    w.local_run("pricey", iid)


@scenario("hostile_labels", "labels that name no run this pack could make ('lora-cloud:', a path)",
          check=reported("destroyed", lambda w: w.hostile))
def _hostile_labels(w: World) -> None:
    w.treasure(["mine"])
    ours(w, "mine")
    w.hostile = [w.instance(None, "die", "label names no run", label="lora-cloud:"),
                 w.instance(None, "die", "label names a path", label="lora-cloud:../../etc")]


@scenario("grace_period", "an unowned instance lives out the grace period (a launch may be between create and "
          "record)", grace_s=120, check=all_of(reported("waiting", lambda w: [w.young]),
                                               reported("destroyed", lambda w: [w.old])))
def _grace(w: World) -> None:
    w.treasure([])
    w.young = w.instance(w.tagged("fresh-orphan"), "keep", "unowned for 0 s of a 120 s grace period")
    w.old = w.instance(w.tagged("old-orphan"), "die", "unowned for 200 s of a 120 s grace period")
    w.store.set_kv(f"reconcile:unowned_since:{w.old}", repr(w.now - 200))


# ---- the provider misbehaves during a pass ---------------------------------------------------------
@scenario("storm_429_5xx", "30 % of vast.ai calls answer 429/5xx during the pass", budgets={"max_dph": 1.0},
          check=all_of(breach("max_dph", "pricey"), reported("destroyed", lambda w: [w.orphan]), storm_struck))
def _storm(w: World) -> None:
    w.treasure(["mine", "pricey"])
    ours(w, "mine")
    pricey_run(w)
    w.orphan = orphan(w)
    w.fake.call("storm", {"rate": 0.3, "retry_after": 0.01})


@scenario("listing_fails", "the instance listing answers 503 through every retry: nothing is destroyed on that "
          "basis, and the CLI says so (exit 4)", expect_exit=4, budgets={"max_dph": 1.0},
          check=problem("listing", "vast", "nothing was checked"))
def _listing_fails(w: World) -> None:
    w.treasure(["pricey"])
    w.instance("orphan", "keep", "unowned, but the listing failed: not destroyed this pass")
    iid = w.instance("pricey", "keep", "above max_dph, but the listing failed: not destroyed this pass", gpu=PRICEY)
    w.local_run("pricey", iid)
    w.fake.call("faults", {"n": 6, "status": 503, "path_contains": "/api/v1/instances", "retry_after": 0.01})


@scenario("listing_next_token_repeats", "the instance listing's next_token repeats: a partial listing is never "
          "'all instances'", expect_exit=4, check=problem("listing", "vast", "did not end"))
def _listing_repeats(w: World) -> None:
    w.treasure(["mine"])
    ours(w, "mine")
    w.instance("orphan", "keep", "the listing did not end: nothing destroyed this pass")
    w.fake.call("listing", {"next_token": "same"})


@scenario("destroy_fails_then_retried", "destroying an orphan fails through every retry; the pass reports it, "
          "enforces a budget elsewhere, and the next pass destroys it", passes=2,
          check=all_of(lambda w, r: problem("destroy", w.orphan)(w, r[:1]), breach("max_run_hours", "late")))
def _destroy_fails(w: World) -> None:
    w.treasure(["late"])
    w.orphan = orphan(w)
    late_run(w)
    w.fake.call("faults", {"n": 6, "status": 500, "path_contains": f"/instances/{w.orphan}", "retry_after": 0.01})


# ---- budgets are numbers -----------------------------------------------------------------------------
@scenario("zero_turns_dollar_limits_off", "max_dph, max_run_usd and max_month_usd of 0 mean 'no limit'",
          budgets={"max_dph": 0, "max_run_usd": 0, "max_month_usd": 0},
          check=no_verdicts())
def _zero_off(w: World) -> None:
    w.treasure(["mine"])
    iid = w.instance("mine", "keep", "pricey and an hour in, but every $ limit is off", gpu=PRICEY, age_h=1)
    w.local_run("mine", iid, seen_h_ago=1)
    w.status("mine")


# An invalid LORA_CLOUD_* value must not switch the guard off: the pass runs on what the files (or
# the built-in limits) say, names the variable and exits 9; the commands that do not guard still
# refuse it (exit 2, tests/cli).
@scenario("zero_hours_refused", "max_run_hours 0 in the environment is refused: the guard runs on the built-in "
          "limit, names the variable and exits 9", budgets={"max_run_hours": 0}, expect_exit=DAMAGED_HOME,
          check=all_of(stderr_says("LORA_CLOUD_MAX_RUN_HOURS"), problem("settings", text="max_run_hours = 6.0"),
                       reported("destroyed", lambda w: [w.orphan])))
def _zero_hours(w: World) -> None:
    w.treasure([])
    w.orphan = orphan(w)


@scenario("nan_budget_refused", "max_dph NaN in the environment (it compares false with everything) is refused: "
          "the guard runs on the built-in limit", budgets={"max_dph": "nan"}, expect_exit=DAMAGED_HOME,
          check=all_of(stderr_says("finite"), problem("settings", text="max_dph = 2.0"),
                       reported("destroyed", lambda w: [w.orphan])))
def _nan_budget(w: World) -> None:
    w.treasure([])
    w.orphan = orphan(w)
