"""The guard's rules for remote ComfyUI sessions (:class:`SessionGuard`, run inside every guard
pass over the pass's one listing).

Ownership is judged as for runs (``ownership.decide_session``). The guard adopts an instance
whose record was lost to a crash, destroys a labelled instance no live session owns (after the
grace period), ends a session whose instance vanished, and enforces idle minutes and max hours
from this controller's side (the image enforces both itself too, :data:`GUARD_SLACK_S` earlier).
The budgets (max $/hr, month) apply to a session's instance as to any instance (the watchdog).

A session whose row cannot be read is reported as a run's is (``corrupt_session``, its id) and
still has hours: the guard holds it to the record's own max_hours when that can be read, else
the most any session may have (MAX_SESSION_HOURS), counted from the earlier of its recorded start
(when readable) and its instance's first sighting here, so it cannot bill forever
(:meth:`SessionGuard._damaged_hours`). Every record on its own: nothing else stops for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ...errors import ConfigError, CorruptRecord, LoraCloudError
from ...models import Instance, Session, SessionState, validate_name
from ...providers.base import Provider
from ...training import inference
from ..events import SESSION_EVENT
from ..home import row_to_session, salvage
from ..money import kinds
from ..money import destroy_instance
from ..money import UnownedGrace
from ..money import (Attributed, Attribution, Bucket, BucketFacts, Decision, LocalSession, Verdict,
                               attribute_all, decide_session, learn_bucket, report_attribution, report_facts,
                               session_bucket_view, written_at)
from ..money import Problems
from .request import session_event
from .store import first_seen, records, save_session

log = logging.getLogger(__name__)

_UNOWNED = "sessions:unowned_since:"
GUARD_SLACK_S = 60.0  # the image stops itself first; the guard acts this much later
BOOT_GRACE_S = 1800.0  # how long an instance may boot before a session without any report is given up


# what a pass did with the sessions' instances, in the order the JSON has them
_OUTCOMES = ("owned", "adopted", "destroyed", "waiting", "doubt", "foreign", "unattributed", "idle", "timed_out",
             "lost", "failed", "ended")


@dataclass(frozen=True)
class SessionGuardReport:
    """The sessions' share of a guard pass: instance ids (``owned`` .. ``unattributed``,
    ``destroyed``), session ids (``idle``, ``timed_out``, ``lost``, ``failed``, ``ended``) and,
    per instance id, the reason for its verdict (``why``)."""

    owned: tuple[str, ...] = ()
    adopted: tuple[str, ...] = ()
    destroyed: tuple[str, ...] = ()  # instance ids
    waiting: tuple[str, ...] = ()  # unowned, inside the grace period
    doubt: tuple[str, ...] = ()  # kept: a witness could not be read
    foreign: tuple[str, ...] = ()  # kept: another bucket's
    unattributed: tuple[str, ...] = ()  # kept: whose it is cannot be told
    idle: tuple[str, ...] = ()  # session ids ended for idling
    timed_out: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    ended: tuple[str, ...] = ()
    why: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_tally(cls, tally: Mapping[str, Any]) -> "SessionGuardReport":
        """The record of the dict a pass filled in as it went."""
        return cls(**{k: tuple(tally[k]) for k in _OUTCOMES}, why=MappingProxyType(dict(tally["why"])))

    def to_dict(self) -> dict[str, Any]:
        return {**{k: list(getattr(self, k)) for k in _OUTCOMES}, "why": dict(self.why)}


class SessionGuard:
    """Sessions' share of a guard pass, over the pass's one listing (see the module docstring):
    ownership by :func:`~.ownership.decide_session`, adoption, idle minutes and max hours, and
    sessions whose instance vanished. Every record on its own: problems are reported, the pass
    goes on."""

    def __init__(self, provider: Provider, state: Any, storage: Any, *, clock: Callable[[], float] = time.time,
                 grace_s: float = 120.0, fresh_s: float = 1800.0, boot_grace_s: float = BOOT_GRACE_S,
                 emit: Callable[[str, dict[str, Any]], None] | None = None):
        self.provider, self.state, self.storage = provider, state, storage
        self.clock, self.grace_s, self.fresh_s, self.boot_grace_s = clock, grace_s, fresh_s, boot_grace_s
        self.emit = emit or (lambda event, data: None)

    def _record(self, session_id: str) -> LocalSession:
        try:
            row = self.state.session_row(session_id)
        except CorruptRecord as exc:
            return LocalSession(damaged=exc.message)
        if row is None:
            return LocalSession()
        try:
            return LocalSession(session=row_to_session(row))
        except CorruptRecord as exc:
            return LocalSession(corrupt=exc.message)

    def _save(self, session: Session, **fields: Any) -> None:
        save_session(self.state, session, self.clock(), **fields)

    def known_here(self, session_id: str) -> bool | None:
        """Whether this home's store has the session (a record it cannot read counts); None when
        the store itself cannot be read."""
        local = self._record(session_id)
        return None if local.damaged else (local.session is not None or bool(local.corrupt))

    async def run_once(self, instances: list[Instance], *, now: float, problems: Problems,
                       facts: BucketFacts | None = None,
                       attributed: dict[str, Attributed] | None = None) -> SessionGuardReport:
        """The sessions' share of a pass; ``facts`` and ``attributed`` are the pass's (default:
        learnt here). Only this bucket's sessions are judged (``ownership.attribute``)."""
        report: dict[str, Any] = {**{k: [] for k in _OUTCOMES}, "why": {}}  # filled in as the pass goes
        labelled = [i for i in instances if i.session_id]
        if facts is None:
            facts = await asyncio.to_thread(learn_bucket, self.storage, self.state, clock=self.clock)
            report_facts(facts, problems)
        if attributed is None:
            attributed = await asyncio.to_thread(attribute_all, labelled, facts, self.storage,
                                                 run_known=lambda rid: None, session_known=self.known_here)
            report_attribution(attributed, labelled, problems)
        for inst in labelled:
            iid = str(inst.id)
            whose = attributed.get(iid) or Attributed(Attribution.UNKNOWN, "not attributed this round")
            if whose.kind in (Attribution.FOREIGN, Attribution.UNKNOWN):  # never judged here
                report["foreign" if whose.kind is Attribution.FOREIGN else "unattributed"].append(iid)
                report["why"][iid] = whose.why
                continue
            try:
                await self._one(inst, now, facts, report, problems)
            except CorruptRecord as exc:
                problems.add_corrupt(exc, self.state.path)
            except Exception as exc:  # noqa: BLE001 - one record must never stop the pass
                problems.add(kinds.UNEXPECTED, iid, f"session instance {iid}: {type(exc).__name__}: {exc}")
        try:
            await self._settle(instances, now, report, problems)
        except CorruptRecord as exc:
            problems.add(kinds.STATE_STORE, self.state.path, exc.message)
        return SessionGuardReport.from_tally(report)

    async def _one(self, inst: Instance, now: float, facts: BucketFacts, report: dict[str, Any],
                   problems: Problems) -> None:
        iid, sid = str(inst.id), str(inst.session_id)
        local = await asyncio.to_thread(self._record, sid)
        view = None
        if not local.damaged:
            view = await asyncio.to_thread(session_bucket_view, self.storage, sid, facts.now, self.fresh_s) \
                if _valid_id(sid) else None
            if view is not None and view.kind is Bucket.CORRUPT:
                problems.add(kinds.CORRUPT_STATUS, sid, view.reason)
            elif view is not None and view.kind is Bucket.UNREADABLE:
                problems.add(kinds.BUCKET, sid, f"status of session {sid} unreadable: {view.reason}")
        else:
            problems.add(kinds.STATE_STORE, self.state.path, local.damaged)
        decision: Decision = decide_session(sid if _valid_id(sid) else None, local, view)
        report["why"][iid] = decision.why
        if decision.verdict is Verdict.DOUBT:
            report["doubt"].append(iid)
            if local.corrupt:  # a damaged record still has hours: it must not bill forever
                await self._damaged_hours(inst, sid, now, report, problems)
            return
        if decision.verdict is Verdict.UNOWNED:
            await self._unowned(inst, decision.why, now, report, problems)
            return
        await asyncio.to_thread(UnownedGrace(self.state, _UNOWNED, self.grace_s).owned, iid)
        report["owned"].append(iid)
        session = local.session
        if session is None or session.state.is_terminal:
            return  # another controller's session: its controller (and its image) enforce its limits
        if session.instance_id != iid:
            fields: dict[str, Any] = {"instance_id": iid, "gpu": inst.gpu_name, "dph": inst.dph_total}
            if session.state is SessionState.LAUNCHING:
                fields["state"] = SessionState.STARTING
            await asyncio.to_thread(self._save, session, **fields)
            report["adopted"].append(iid)
        status = view.status if view is not None and view.kind in (Bucket.LIVE, Bucket.STALE, Bucket.UNDATED) \
            else None
        age = now - session.created_at
        if age >= session.max_hours * 3600:
            await self._end(session, inst, SessionState.TIMED_OUT,
                            f"reached its {session.max_hours:g} h limit (max hours)", report["timed_out"], report,
                            problems)
            return
        idle_limit = session.idle_minutes * 60 + GUARD_SLACK_S
        if status is not None and status.state is SessionState.READY:
            idle = status.idle_s + await asyncio.to_thread(self._since_report, sid, facts)
            if idle >= idle_limit:
                await self._end(session, inst, SessionState.IDLE,
                                f"idle for {idle / 60:.0f} min (idle limit {session.idle_minutes:g} min)",
                                report["idle"], report, problems)
        elif status is None and age >= self.boot_grace_s + idle_limit:
            await self._end(session, inst, SessionState.FAILED,
                            f"its ComfyUI never reported in {age / 60:.0f} min", report["failed"], report, problems)

    async def _damaged_hours(self, inst: Instance, sid: str, now: float, report: dict[str, Any],
                             problems: Problems) -> None:
        """The hours of a session whose record cannot be read (see the module docstring): its own
        max_hours when readable, else MAX_SESSION_HOURS, from the earlier of its recorded start
        (when readable) and its instance's first sighting here; past them, it is timed out."""
        iid = str(inst.id)
        row = await asyncio.to_thread(self.state.session_row, sid)
        seen = await asyncio.to_thread(first_seen, self.state, inst.provider, iid)
        born = now if seen is None else seen
        session, wrong = salvage(row or {"id": sid}, born=born)
        fields = {w.split(" ", 1)[0] for w in wrong}
        if "created_at" not in fields:
            born = min(born, session.created_at)
        why = "; ".join(wrong)[:300] or "it names another session"
        problems.add(kinds.CORRUPT_SESSION, sid, f"the record of session {sid} cannot be read ({why}): its "
                                                 f"instance {iid} is held to {session.max_hours:g} h from "
                                                 f"{_clock(born)}")
        if now - born < session.max_hours * 3600:
            return
        session.instance_id, session.created_at = iid, born
        report["doubt"].remove(iid)
        limit = "the most a session may have" if "max_hours" in fields else "its max hours"
        await self._end(session, inst, SessionState.TIMED_OUT,
                        f"reached {session.max_hours:g} h, {limit} (its record is damaged)", report["timed_out"],
                        report, problems)

    def _since_report(self, session_id: str, facts: BucketFacts) -> float:
        """How long ago the status was written, both ends on the bucket's clock (never the rented
        host's, never ours); 0 when that cannot be told this round (nothing is judged on it)."""
        written = written_at(self.storage, inference.status_key(session_id))
        if written is None or facts.now is None:
            return 0.0
        return max(0.0, facts.now - written)

    async def _unowned(self, inst: Instance, why: str, now: float, report: dict[str, Any], problems: Problems) -> None:
        iid = str(inst.id)
        if await asyncio.to_thread(UnownedGrace(self.state, _UNOWNED, self.grace_s).waiting, iid, now, problems):
            report["waiting"].append(iid)
            return
        done = await destroy_instance(self.provider, self.state, iid, why=why, what=f"session instance {iid}",
                                      label=inst.label, at=now, problems=problems)
        if done.gone:
            report["destroyed"].append(iid)

    async def _end(self, session: Session, inst: Instance, state: SessionState, why: str, bucket: list[str],
                   report: dict[str, Any], problems: Problems) -> None:
        iid = str(inst.id)
        done = await destroy_instance(self.provider, self.state, iid, why=why,
                                      what=f"instance {iid} of session {session.id}", label=inst.label,
                                      clock=self.clock, problems=problems)
        if not done.gone:
            return
        report["destroyed"].append(iid)
        bucket.append(session.id)
        report["why"][iid] = why
        await asyncio.to_thread(self._save, session, state=state, error=why)
        try:
            await asyncio.to_thread(inference.end_session_in_bucket, self.storage, session.id, state, why)
        except LoraCloudError as exc:
            problems.add(kinds.BUCKET, session.id, f"could not mark session {session.id} ended in the bucket: "
                                                   f"{exc.message}")
        self.emit(SESSION_EVENT, session_event({**session.to_dict(), "live": False}, why))

    async def _settle(self, instances: list[Instance], now: float, report: dict[str, Any], problems: Problems) -> None:
        """Live sessions whose instance is gone, and launches that never made one."""
        listed = {str(i.id) for i in instances}
        records = await asyncio.to_thread(self._records, problems)
        for session in records:
            if session.state.is_terminal or session.provider != self.provider.name:
                continue
            try:
                if session.instance_id and session.instance_id not in listed:
                    if await self.provider.get(session.instance_id) is not None:
                        continue  # a listing that missed it is not a vanished instance
                    try:
                        status = await asyncio.to_thread(inference.read_session_status, self.storage, session.id)
                    except LoraCloudError:
                        status = None
                    if status is not None and status.state.is_terminal:
                        await asyncio.to_thread(self._save, session, state=status.state,
                                                error=status.error or status.message or None)
                        report["ended"].append(session.id)
                    else:
                        message = f"instance {session.instance_id} vanished"
                        await asyncio.to_thread(self._save, session, state=SessionState.LOST, error=message)
                        report["lost"].append(session.id)
                    await asyncio.to_thread(self.state.mark_instance_destroyed, session.provider,
                                            session.instance_id, now)
                    self.emit(SESSION_EVENT, session_event({**session.to_dict(), "live": False}, session.error))
                elif not session.instance_id and now - session.updated_at >= self.grace_s:
                    await asyncio.to_thread(self._save, session, state=SessionState.FAILED,
                                            error="the start was interrupted before an instance was created")
                    report["failed"].append(session.id)
            except LoraCloudError as exc:
                problems.add(kinds.LISTING, session.id, f"session {session.id}: {exc.message}")

    def _records(self, problems: Problems) -> list[Session]:
        return records(self.state, on_corrupt=lambda exc: problems.add_corrupt(exc, self.state.path))


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _valid_id(session_id: str) -> bool:
    try:
        validate_name(session_id, "session id")
    except ConfigError:
        return False
    return True
