"""Fault scenarios for who may end a run: only the home that can read a run's bucket judges it,
and how recent a report is is judged on the bucket's clock.

* a home with the vast.ai key but another storage (the default local folder, another folder)
  meets another home's live runs and sessions: it keeps them, reporting them as another
  bucket's (tagged) or as instances it cannot attribute (labels from before bucket ids), and
  holds none of them to its budgets; its own bucket's orphans still go;
* a home sharing the bucket whose clock runs 40 minutes or 2 hours fast keeps every live run and
  session, and says its clock is off;
* labels from before bucket ids keep being guarded by the home that launched them.

The "other home" is the scenario bucket (the emulator's) with its trainers' reports in it; the
home under test is the reconcile process, its storage set by the row.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from comfy_lora_cloud.models import RunState, SessionState, SessionStatus
from comfy_lora_cloud.providers.base import session_label, with_bucket_tag
from comfy_lora_cloud.storage.identity import ensure_bucket_id
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.inference import status_key

from .harness import HOUR, World
from .registry import scenario
from .scenarios_guard import PRICEY, all_of, breach, late_run, local_state, problem, reported

Results = list[dict[str, Any]]
BUDGETS = {"max_dph": 1.0}  # the other home's instances run on a GPU above it: not ours to enforce


# ---- the other home's work, in the scenario bucket --------------------------------------------------
def their_run(w: World, run_id: str, why: str, **kwargs: Any) -> str:
    """Another home's live run: launched from the scenario bucket, its trainer reporting there."""
    iid = w.instance(run_id, "keep", why, **kwargs)
    w.status(run_id)
    return iid


def their_session(w: World, session_id: str, why: str, **kwargs: Any) -> str:
    """Another home's live remote ComfyUI: its image reports to ``sessions/<id>/status.json``."""
    iid = w.instance(None, "keep", why, label=session_label(session_id), **kwargs)
    status = SessionStatus(session_id=session_id, state=SessionState.READY, updated_at=w.now, idle_s=30)
    w.storage.write_bytes(status_key(session_id), json.dumps(status.to_dict()).encode())
    return iid


def others_work(w: World) -> None:
    """A tagged live run and session (on a GPU above this home's max $/hr), and a live run
    labelled before bucket ids."""
    w.treasure([w.tagged("theirs"), "legacy-theirs"])
    w.run = their_run(w, w.tagged("theirs"), "another home's live run (tagged with its bucket)", gpu=PRICEY)
    w.session = their_session(w, w.tagged("session-theirs"), "another home's live session", gpu=PRICEY)
    w.legacy = their_run(w, "legacy-theirs", "another home's live run, labelled before bucket ids")


def kept_as_others(foreign_runs: Callable[[World], list[str]], unattributed: Callable[[World], list[str]]
                   ) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        for r in results:
            rec, ses = r["reconcile"], r["sessions"]
            assert sorted(rec["foreign"]) == sorted(foreign_runs(w)), rec
            assert ses["foreign"] == [w.session], ses
            assert sorted(rec["unattributed"]) == sorted(unattributed(w)), rec
            assert not [v for v in r["budgets"] if v["instance_id"] in (w.run, w.session, w.legacy)], r["budgets"]
        problem("foreign_bucket", w.run, "belongs to another bucket")(w, results)
        problem("foreign_bucket", w.session, "belongs to another bucket")(w, results)
        problem("unattributed", w.legacy, "predates bucket ids")(w, results)
    return check


@scenario("bucketless_home_keeps_other_homes_work", "a home with the vast.ai key and the default local folder "
          "(no bucket) meets another home's live run and session", passes=2, budgets=BUDGETS,
          env={"LORA_CLOUD_STORAGE": ""},
          check=kept_as_others(lambda w: [w.run], lambda w: [w.legacy]))
def _bucketless(w: World) -> None:
    others_work(w)


@scenario("other_folder_home_keeps_other_homes_work", "a home on another local folder meets another home's live "
          "run and session, and still destroys its own bucket's orphan", passes=2, budgets=BUDGETS,
          check=all_of(kept_as_others(lambda w: [w.run], lambda w: [w.legacy]),
                       lambda w, r: reported("destroyed", lambda w: [w.own_orphan])(w, r[:1])))
def _other_folder(w: World) -> None:
    folder = w.home.parent / "other-folder"
    w.env["LORA_CLOUD_STORAGE"] = str(folder)  # every pass of this row reads that folder
    own_tag = ensure_bucket_id(LocalStorage(folder))  # that home launched from its folder before
    others_work(w)
    w.own_orphan = w.instance(with_bucket_tag("mine-gone", own_tag), "die", "this folder's, and no run owns it")


# ---- a home sharing the bucket, on a fast clock -----------------------------------------------------
def _fast_clock(w: World) -> None:
    w.treasure([w.tagged("theirs"), "legacy-theirs", "mine"])
    w.theirs = their_run(w, w.tagged("theirs"), "another home's live run, reported seconds ago")
    w.session = their_session(w, w.tagged("session-theirs"), "another home's live session")
    w.legacy = their_run(w, "legacy-theirs", "another home's live run, labelled before bucket ids")
    w.mine = w.instance(w.tagged("mine"), "keep", "this home's live run")
    w.local_run(w.tagged("mine"), w.mine)
    w.status(w.tagged("mine"))
    w.orphan = w.instance(w.tagged("orphan"), "die", "this bucket's, and no run owns it anywhere")


def fast_clock_checks(ahead: str) -> Callable[[World, Results], None]:
    def check(w: World, results: Results) -> None:
        for r in results:
            assert sorted(r["reconcile"]["owned"]) == sorted([w.theirs, w.legacy, w.mine]), r["reconcile"]
            assert r["sessions"]["owned"] == [w.session], r["sessions"]
        assert results[0]["reconcile"]["destroyed"] == [w.orphan]
        problem("clock", "clock", ahead)(w, results)
    return check


@scenario("clock_40_min_fast", "a home sharing the bucket whose clock runs 40 minutes ahead (it used to read "
          "every live report as stale)", passes=2, clock_ahead_s=40 * 60,
          check=fast_clock_checks("40 min ahead of the bucket's"))
def _clock_40_min(w: World) -> None:
    _fast_clock(w)


@scenario("clock_2_hours_fast", "a home sharing the bucket whose clock runs 2 hours ahead", passes=2,
          clock_ahead_s=2 * HOUR, check=fast_clock_checks("2.0 h ahead of the bucket's"))
def _clock_2_hours(w: World) -> None:
    _fast_clock(w)


# ---- labels from before bucket ids, at the home that launched them ----------------------------------
@scenario("legacy_labels_still_guarded_at_home", "runs labelled before bucket ids, in this home's store: budgets "
          "enforced, an ended one's instance destroyed, a live one kept",
          check=all_of(breach("max_run_hours", "late"), local_state("ended", RunState.STOPPED),
                       reported("destroyed", lambda w: [w.ended]), reported("owned", lambda w: [w.late, w.live]),
                       reported("unattributed", lambda w: [])))
def _legacy_at_home(w: World) -> None:
    w.treasure(["late", "live"])
    w.late = late_run(w)  # untagged, 9 h into a 6 h max_run_hours
    w.live = w.instance("live", "keep", "this home's live run, labelled before bucket ids")
    w.local_run("live", w.live)
    w.status("live")
    w.ended = w.instance("ended", "die", "this home stopped the run; its instance bills on")
    w.local_run("ended", w.ended, state=RunState.STOPPED)


@scenario("own_bucket_tagged_orphans_destroyed", "this bucket's instances (tagged) that no live run owns: "
          "one known nowhere, one whose trainer reported done", passes=1,
          check=reported("destroyed", lambda w: sorted([w.orphan, w.done])))
def _own_tagged(w: World) -> None:
    w.treasure([w.tagged("done")])
    w.orphan = w.instance(w.tagged("ghost"), "die", "this bucket's, known nowhere")
    w.done = w.instance(w.tagged("done"), "die", "its trainer reported done")
    w.status(w.tagged("done"), RunState.DONE)
