"""Reconcile: make the provider's instances and the state store agree, so nothing bills unowned.

At start and periodically (:meth:`Reconciler.run_once`), over one complete listing of our
labelled instances:

* only this bucket's instances are judged (:func:`ownership.attribute`): one of another
  bucket (``foreign``) or one whose bucket cannot be told (``unattributed``) is kept and
  reported, whatever else is known about it;
* each of this bucket's instances gets a verdict from :func:`ownership.decide` (the store and
  the bucket as witnesses): OWNED is kept, DOUBT is kept and reported, UNOWNED is destroyed once it has been
  unowned for ``grace_s`` (:class:`~..money.grace.UnownedGrace`, the sessions' rule too);
  every destroy is confirmed by reading the instance back;
* a run has one instance: of several with its label, the one the run records is kept (else the
  one this controller saw first) and the others are unowned;
* an owned instance the store does not know yet (the controller died between create and
  recording it) is adopted into its run;
* a live run whose recorded instance is gone (confirmed with a read) ends: with the state its
  trainer reported, else LOST, written to the bucket first (so every controller sees it) and
  then to the store; a run still PENDING/LAUNCHING with no instance after ``grace_s`` FAILS,
  unless it is a relaunch after a preemption: that one goes back to PREEMPTED, and a PREEMPTED
  run's vanished instance is left to the guard's recovery (service/runs/recovery.py), which moves it.

Every instance and run is handled on its own: what cannot be read or done is reported in
``problems`` and the pass goes on. A failed listing raises: it is never read as "no instances".
With a damaged state store nothing is destroyed for ownership reasons (the guard still
enforces the budgets).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ...errors import CorruptRecord, LoraCloudError
from ...models import Instance, Run, RunState
from ...providers.base import Provider
from ...storage.base import Storage
from ..money import kinds
from ..money import destroy_instance
from ..money import UnownedGrace
from ..money import (Attributed, Attribution, Bucket, BucketFacts, BucketView, Decision, Local, Verdict,
                        attribute_all, bucket_view, decide, is_run_id, learn_bucket, report_attribution,
                        report_facts)
from ..money import Problems
from ..home import StateStore
from ..runs import end_run

log = logging.getLogger(__name__)

_SEEN = "reconcile:unowned_since:"  # + instance id -> when it was first found unowned (money/grace.py)


@dataclass
class ReconcileReport:
    owned: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # unowned, inside the grace period
    doubt: list[str] = field(default_factory=list)  # kept: a witness could not be read
    foreign: list[str] = field(default_factory=list)  # kept: another bucket's ("belongs to another bucket")
    unattributed: list[str] = field(default_factory=list)  # kept: whose it is cannot be told
    lost_runs: list[str] = field(default_factory=list)
    ended_runs: list[str] = field(default_factory=list)  # instance gone after the trainer reported the end
    failed_runs: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)  # relaunches cut short: back to PREEMPTED
    why: dict[str, str] = field(default_factory=dict)  # instance id -> its verdict's reason

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Reconciler:
    def __init__(self, provider: Provider, state: StateStore, storage: Storage, *,
                 clock: Callable[[], float] = time.time, grace_s: float = 120.0, fresh_s: float = 1800.0):
        self.provider = provider
        self.state = state
        self.storage = storage
        self.clock = clock
        self.grace_s = grace_s
        self.fresh_s = fresh_s
        self.grace = UnownedGrace(state, _SEEN, grace_s)

    async def run_once(self, instances: list[Instance] | None = None, *, now: float | None = None,
                       first_seen: dict[str, float] | None = None, problems: Problems | None = None,
                       facts: BucketFacts | None = None,
                       attributed: dict[str, Attributed] | None = None) -> ReconcileReport:
        """One pass over ``instances`` (default: list them now; a failed listing raises).
        ``facts`` and ``attributed``: the guard pass's (default: learnt here)."""
        problems = problems if problems is not None else Problems()
        now = self.clock() if now is None else now
        if instances is None:
            instances = await self.provider.list()
        if facts is None:
            facts = await asyncio.to_thread(learn_bucket, self.storage, self.state, clock=self.clock)
            report_facts(facts, problems)
        if attributed is None:
            runs_only = [i for i in instances if not i.session_id]
            attributed = await asyncio.to_thread(attribute_all, runs_only, facts, self.storage,
                                                 run_known=self.known_here, session_known=lambda sid: None)
            report_attribution(attributed, runs_only, problems)
        if first_seen is None:
            first_seen = await self._first_seen(instances, now, problems)
        report = ReconcileReport()
        decisions: dict[str, tuple[Instance, Decision, Local]] = {}
        for inst in instances:
            if inst.session_id:  # a remote ComfyUI session's: sessions.SessionGuard decides
                continue
            whose = attributed.get(str(inst.id)) or Attributed(Attribution.UNKNOWN, "not attributed this round")
            if whose.kind in (Attribution.FOREIGN, Attribution.UNKNOWN):  # never judged here
                (report.foreign if whose.kind is Attribution.FOREIGN else report.unattributed).append(str(inst.id))
                report.why[str(inst.id)] = whose.why
                continue
            try:
                local = await asyncio.to_thread(self._local, inst.run_id)
                view = None
                if inst.run_id and not local.damaged:
                    view = await asyncio.to_thread(self._bucket, inst.run_id, facts.now)
                decisions[str(inst.id)] = (inst, self._decide(inst, local, view, problems), local)
            except CorruptRecord as exc:
                problems.add_corrupt(exc, self.state.path)
            except Exception as exc:  # noqa: BLE001 - one record must never stop the pass
                problems.add(kinds.UNEXPECTED, inst.id, f"instance {inst.id}: {type(exc).__name__}: {exc}")
        self._one_per_run(decisions, first_seen)
        for iid, (inst, decision, local) in decisions.items():
            report.why[iid] = decision.why
            try:
                await self._act(inst, decision, local, now, report, problems)
            except CorruptRecord as exc:
                problems.add_corrupt(exc, self.state.path)
            except Exception as exc:  # noqa: BLE001 - one record must never stop the pass
                problems.add(kinds.UNEXPECTED, iid, f"instance {iid}: {type(exc).__name__}: {exc}")
        if not any(d.damaged for _, _, d in decisions.values()):
            await self._settle_runs({str(i.id) for i in instances}, now, facts, report, problems)
        return report

    # ---- verdicts ------------------------------------------------------------------------------
    async def _first_seen(self, instances: list[Instance], now: float, problems: Problems) -> dict[str, float]:
        try:
            return await asyncio.to_thread(self.state.record_sightings, instances, now)
        except CorruptRecord as exc:
            problems.add(kinds.STATE_STORE, self.state.path, exc.message)
            return {str(i.id): now for i in instances}

    def _local(self, run_id: str | None) -> Local:
        if not run_id:
            return Local()
        try:
            return Local(run=self.state.get_run(run_id))
        except CorruptRecord as exc:
            if exc.details.get("run_id") == run_id:
                return Local(corrupt=exc.message)
            return Local(damaged=exc.message)

    def known_here(self, run_id: str) -> bool | None:
        """Whether this home's store has run ``run_id`` (a row it cannot read counts); None when
        the store itself cannot be read."""
        local = self._local(run_id)
        return None if local.damaged else (local.run is not None or bool(local.corrupt))

    def _bucket(self, run_id: str, bucket_now: float | None) -> BucketView:
        if not is_run_id(run_id):
            return BucketView(Bucket.ABSENT)
        return bucket_view(self.storage, run_id, bucket_now, self.fresh_s)

    def _decide(self, inst: Instance, local: Local, view: BucketView | None, problems: Problems) -> Decision:
        if local.damaged:
            problems.add(kinds.STATE_STORE, self.state.path, local.damaged)
        elif local.corrupt:
            problems.add(kinds.CORRUPT_RUN, inst.run_id, local.corrupt)
        if view is not None and view.kind is Bucket.CORRUPT:
            problems.add(kinds.CORRUPT_STATUS, inst.run_id, view.reason)
        elif view is not None and view.kind is Bucket.UNREADABLE:
            problems.add(kinds.BUCKET, inst.run_id, f"status of run {inst.run_id} unreadable: {view.reason}")
        return decide(inst.run_id, local, view)

    @staticmethod
    def _one_per_run(decisions: dict[str, tuple[Instance, Decision, Local]], first_seen: dict[str, float]) -> None:
        """Of several owned instances with one run's label keep one: the one the run records,
        else the one seen first (then the lowest id); the others are unowned."""
        by_run: dict[str, list[str]] = {}
        for iid, (inst, decision, _) in decisions.items():
            if decision.verdict is Verdict.OWNED and inst.run_id:
                by_run.setdefault(inst.run_id, []).append(iid)
        for run_id, ids in by_run.items():
            if len(ids) < 2:
                continue
            run = decisions[ids[0]][2].run
            recorded = run.instance_id if run is not None and run.instance_id in ids else None
            keeper = recorded or min(ids, key=lambda i: (first_seen.get(i, float("inf")), _id_order(i)))
            for iid in ids:
                if iid != keeper:
                    inst, _, local = decisions[iid]
                    decisions[iid] = (inst, Decision(Verdict.UNOWNED, f"a second instance of run {run_id} "
                                                                      f"(keeping {keeper})"), local)

    # ---- actions -------------------------------------------------------------------------------
    async def _act(self, inst: Instance, decision: Decision, local: Local, now: float, report: ReconcileReport,
                   problems: Problems) -> None:
        iid = str(inst.id)
        if decision.verdict is not Verdict.UNOWNED:
            (report.owned if decision.verdict is Verdict.OWNED else report.doubt).append(iid)
            if not local.damaged:
                await asyncio.to_thread(self.grace.owned, iid)
            run = local.run
            if decision.verdict is Verdict.OWNED and run is not None and run.instance_id != iid \
                    and not run.state.is_terminal:
                await asyncio.to_thread(self._adopt, run, inst)
                report.adopted.append(iid)
            return
        if await asyncio.to_thread(self.grace.waiting, iid, now, problems):
            report.waiting.append(iid)
            return
        done = await destroy_instance(self.provider, self.state, iid, why=decision.why, label=inst.label, at=now,
                                      problems=problems)
        if not done.gone:
            return
        report.destroyed.append(iid)
        run = local.run
        if (decision.ended is not None and run is not None and not run.state.is_terminal
                and run.instance_id in (None, iid)):  # the store learns the end its trainer reported
            if await self._end(run.id, decision.ended, decision.why, problems):
                report.ended_runs.append(run.id)

    def _adopt(self, run: Run, inst: Instance) -> None:
        fields: dict[str, Any] = {"instance_id": str(inst.id), "gpu": inst.gpu_name, "dph": inst.dph_total}
        if run.state.is_launching:
            fields["state"] = RunState.STARTING
        self.state.update_run(run.id, **fields)

    # ---- runs whose instance is gone -----------------------------------------------------------
    async def _settle_runs(self, listed: set[str], now: float, facts: BucketFacts, report: ReconcileReport,
                           problems: Problems) -> None:
        try:
            runs = await asyncio.to_thread(
                self.state.list_runs, live_only=True, limit=100_000,
                on_corrupt=lambda exc: problems.add_corrupt(exc, self.state.path))
        except CorruptRecord as exc:
            problems.add(kinds.STATE_STORE, self.state.path, exc.message)
            return
        for run in runs:
            if run.provider != self.provider.name:
                continue
            try:
                if run.instance_id and run.instance_id not in listed:
                    await self._instance_gone(run, now, facts, report, problems)
                elif not run.instance_id and run.state.is_launching and now - run.updated_at >= self.grace_s \
                        and is_relaunch(run):  # the controller died mid-recovery: recovery tries again
                    await asyncio.to_thread(self.state.update_run, run.id, state=RunState.PREEMPTED)
                    report.requeued.append(run.id)
                elif not run.instance_id and run.state.is_launching and now - run.updated_at >= self.grace_s:
                    message = "the launch was interrupted before an instance was created"
                    if await self._end(run.id, RunState.FAILED, message, problems):
                        report.failed_runs.append(run.id)
            except CorruptRecord as exc:
                problems.add_corrupt(exc, self.state.path)
            except Exception as exc:  # noqa: BLE001 - one run must never stop the others
                problems.add(kinds.UNEXPECTED, run.id, f"run {run.id}: {type(exc).__name__}: {exc}")

    async def _instance_gone(self, run: Run, now: float, facts: BucketFacts, report: ReconcileReport,
                             problems: Problems) -> None:
        if run.state is RunState.PREEMPTED:
            return  # the guard's recovery moves it (a vanished instance is one it need not destroy)
        iid = str(run.instance_id)
        try:
            still = await self.provider.get(iid)  # a listing that missed it is not a vanished instance
        except LoraCloudError as exc:
            problems.add(kinds.LISTING, iid, f"could not confirm that instance {iid} of run {run.id} is gone: "
                                             f"{exc.message}")
            return
        if still is not None:
            return
        view = await asyncio.to_thread(self._bucket, run.id, facts.now)
        if view.kind is Bucket.UNREADABLE:
            problems.add(kinds.BUCKET, run.id, f"run {run.id} lost its instance; its status is unreadable, "
                                               f"so it is settled next round: {view.reason}")
            return
        if view.kind is Bucket.ENDED:
            assert view.status is not None
            if not await self._end(run.id, view.status.state, view.status.error or view.status.message, problems):
                return
            report.ended_runs.append(run.id)
        else:
            message = f"instance {iid} vanished (not listed by {run.provider})"
            if not await self._end(run.id, RunState.LOST, message, problems):
                return
            report.lost_runs.append(run.id)
        await asyncio.to_thread(self.state.mark_instance_destroyed, run.provider, iid, now)

    async def _end(self, run_id: str, end: RunState, message: str, problems: Problems) -> bool:
        """End the run through :func:`~..runs.lifecycle.end_run` (the bucket first, unless its
        trainer reported an end, then the store); False when the bucket could not be written:
        the end is written again at the start of the next round."""
        ended = await asyncio.to_thread(end_run, self.state, self.storage, run_id, end, message)
        if ended.problem:
            problems.add(kinds.BUCKET, run_id, f"could not mark run {run_id} {end.value} in the bucket: "
                                               f"{ended.problem}")
            return False
        return True

    async def run(self, stop: asyncio.Event, interval: float = 300.0) -> None:
        """Reconcile now, then every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                report = await self.run_once()
                if report.destroyed or report.lost_runs:
                    log.warning("reconcile: %s", report.to_dict())
            except LoraCloudError as exc:
                log.warning("reconcile failed: %s", exc.message)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass


def is_relaunch(run: Run) -> bool:
    """A launch the guard's recovery started after a preemption (attempt 2 on), not a first one."""
    attempt = run.spec.get("attempt")
    return isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 1


def _id_order(iid: str) -> tuple[int, str]:
    return (int(iid), "") if iid.isdigit() else (1 << 62, iid)
