"""Fault scenarios for a session's row in this controller's own store that cannot be read (a
bug, a hand edit, a damaged page): a state no version knows, a null start, hours or a port as
text. Such a row has one meaning, as a run's has: it is reported (``corrupt_session``, its id),
its instance is never judged unowned for it, and it is still held to what can be known of it:
its hours (its own max_hours when readable, else the most a session may have, from the earlier
of its recorded start and its instance's first sighting here) and the budgets every instance has.
Nothing else in the pass stops for it: runs, readable sessions and their limits go on.
"""

from __future__ import annotations

from typing import Any

from comfy_lora_cloud.models import Instance, InstanceState, Session, SessionState
from comfy_lora_cloud.providers.base import session_label
from comfy_lora_cloud.settings import MAX_SESSION_HOURS

from .harness import HOUR, World
from .registry import scenario
from .scenarios_guard import PRICEY, all_of, breach, late_run, ours, problem

Results = list[dict[str, Any]]


def session_row(w: World, sid: str, fate: str, why: str, *, age_h: float, damage: str = "", gpu: str | None = None,
                **fields: Any) -> str:
    """A session started here ``age_h`` hours ago (its instance first seen then, its row written
    by the service), whose row was then changed behind the store's back by ``damage`` (SQL SET)."""
    iid = w.instance(None, fate, why, label=session_label(sid), age_h=age_h, gpu=gpu)
    born = w.now - age_h * HOUR
    session = Session(id=sid, state=SessionState.READY, instance_id=iid, created_at=born, updated_at=born,
                      max_hours=4.0, **fields)
    w.store.put_session(session.to_dict())
    w.store.put_instance(Instance(id=iid, label=session_label(sid), state=InstanceState.RUNNING), None, seen_at=born)
    if damage:
        w.sql(f"UPDATE sessions SET {damage} WHERE id = ?", sid)
    return iid


def timed_out_once(sid: str):
    """Ended once for its hours (not again in a later pass), its row whole again and timed out."""
    def check(w: World, results: Results) -> None:
        assert [sid in r["sessions"]["timed_out"] for r in results] == [True] + [False] * (len(results) - 1), \
            [r["sessions"] for r in results]
        session = w.store.get_session(sid)
        assert session is not None and session.state is SessionState.TIMED_OUT, session
    return check


def session_breach(budget: str, sid: str):
    """The watchdog enforced ``budget`` on the instance of session ``sid``."""
    def check(w: World, results: Results) -> None:
        iid = next(i for i, why in w.why.items() if why.startswith(f"[{sid}]"))
        hits = [v for r in results for v in r.get("budgets", []) if v["level"] == "breach" and v["budget"] == budget
                and str(v["instance_id"]) == iid]
        assert hits, (budget, sid, [r.get("budgets") for r in results])
    return check


def still_whole(sid: str, state: SessionState):
    """A readable session the pass left as it was (nothing else stopped for the damaged rows)."""
    def check(w: World, results: Results) -> None:
        session = w.store.get_session(sid)
        assert session is not None and session.state is state, session
        for r in results:
            iid = session.instance_id
            assert iid in r["sessions"]["owned"] and iid not in r["sessions"]["destroyed"], r["sessions"]
    return check


def reported_once_each(pass_index: int, *sids: str):
    """Each damaged row is one ``corrupt_session`` problem, named by its session id, in that pass
    (a row the guard ended is whole again after it, and no longer reported)."""
    def check(w: World, results: Results) -> None:
        for r in [results[pass_index]]:
            found = sorted(p["subject"] for p in r.get("problems", []) if p["kind"] == "corrupt_session")
            assert found == sorted(sids), r.get("problems")
            assert not [p for p in r.get("problems", []) if p["kind"] in ("corrupt_row", "unexpected", "state_store")
                        and "session" in p["message"]], r.get("problems")
    return check


@scenario("corrupt_session_row", "session rows with a state no version knows, a null start, hours and a port as "
          "text: each is reported, its instance is held to its hours and the $/hr budget, and the runs and the "
          "readable session beside them go on",
          budgets={"max_dph": 1.0}, passes=2,
          check=all_of(reported_once_each(0, "session-mangled", "session-overdue", "session-pricey"),
                       reported_once_each(-1, "session-mangled", "session-pricey"),
                       problem("corrupt_session", "session-mangled", "held to 4 h"),
                       problem("corrupt_session", "session-overdue", f"held to {MAX_SESSION_HOURS:g} h"),
                       problem("corrupt_session", "session-pricey", "remote_port is 'eighty'"),
                       timed_out_once("session-overdue"), session_breach("max_dph", "session-pricey"),
                       still_whole("session-fine", SessionState.READY), breach("max_run_hours", "late")))
def _corrupt_session_row(w: World) -> None:
    w.treasure(["mine", "late"])
    ours(w, "mine", "a live run of ours beside the damaged rows")
    late_run(w)  # the runs' limits still hold in the same pass
    session_row(w, "session-fine", "keep", "[session-fine] a readable session ten minutes old", age_h=1 / 6)
    session_row(w, "session-mangled", "keep", "[session-mangled] a state no version knows and no start, an hour "
                "since its instance was first seen: young for its own 4 h", age_h=1,
                damage="state = 'hibernating', created_at = NULL")
    session_row(w, "session-overdue", "die", f"[session-overdue] max_hours as text and {MAX_SESSION_HOURS + 2:g} h "
                "old: past the most a session may have", age_h=MAX_SESSION_HOURS + 2, damage="max_hours = 'lots'")
    session_row(w, "session-pricey", "die", "[session-pricey] a port as text, young, on a GPU above max_dph: the "
                "$/hr budget holds for it as for any instance", age_h=0.5, gpu=PRICEY,
                damage="remote_port = 'eighty'")
