"""One guard pass: reconcile (destroy labelled instances no live run owns, end runs whose
instance vanished), the sessions' rules (:class:`~.sessions.SessionGuard`: the same ownership
for remote ComfyUI sessions, plus their idle minutes and max hours), then the budget watchdog (book costs, reconcile them with the provider's
charges, enforce the budgets). ComfyUI's pack loop runs it every 30 s; ``lora-cloud instances
reconcile`` (and cron) runs it once. Every caller builds it the same way, with the bucket: who
owns an instance is decided with the bucket as a witness (:mod:`ownership`), so no caller can
build a guard that destroys another machine's live run.

Only the home that can vouch for a run may end it: each pass first learns its bucket's ids and
clock (:func:`~.ownership.learn_bucket`) and sorts the listing by whose each instance is
(:func:`~.ownership.attribute_all`). Reconcile, the sessions' rules, the watchdog and the
recovery then touch only this bucket's instances; another bucket's (``foreign_bucket``) and
those whose bucket cannot be told (``unattributed``) are kept and reported. How recent a report
is is judged on the bucket's clock; a local clock off by more than a few minutes is a ``clock``
problem.

The pass fails safe, record by record:

* first, the ends of runs whose bucket write failed last round are written again, the bucket
  before the store (:meth:`~.watchdog.Watchdog.finish_ends`), so reconcile never calls such a
  run ``lost``;
* one listing serves both halves; a failed listing is reported (``ok`` false) and nothing is
  destroyed on its basis;
* a record that cannot be read (status.json, a state-store row, a ``/charges/`` row) is skipped,
  reported in ``problems`` and sent once as a ``lora_cloud.guard`` event
  ``{"kind": "problem", "problem": <kind>, "subject", "message"}`` (:mod:`problems` lists the kinds);
  the other records are handled as usual;
* the watchdog runs every pass, also when reconcile or ``/charges/`` failed;
* then the recovery of preempted runs (:mod:`recovery`, when the caller gives one:
  :meth:`App.guard_pass` does) notices stopped instances of live runs and resumes or moves them,
  with this round's spend already in the ledger and the instances the watchdog destroyed left out;
* a local-folder bucket's hidden partial files that no live writer owns (an upload killed
  mid-way) are removed (``storage/local.py:LocalStorage.sweep_partials``), at most every
  :data:`PARTIALS_EVERY_S`; ``swept`` in the result lists them;
* a damaged state store (truncated, overwritten): nothing is destroyed for ownership reasons,
  since no instance can be matched to its run; the budgets that need no store still hold:
  max $/hr, the hours since this guard first saw the instance (kept in :class:`GuardMemory`
  while the store is unreadable, so the ComfyUI loop still enforces them), a run's spend as
  ``/charges/`` billed it, and the month's spend as ``/charges/`` billed our instances this month
  (a ``budget`` problem says so; only with neither store nor charges is the month unchecked).

Ages come from one clock, the controller's: when this controller first saw (or launched) an
instance, never the provider's ``start_date``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable

from ...errors import CorruptRecord, LoraCloudError
from ...models import Instance
from ...providers.base import Provider
from ...storage import Storage
from ..money import kinds
from ..money import Budgets
from ..events import GUARD_EVENT, Emit
from .memory import GuardMemory
from ..money import Attribution, BucketFacts, attribute_all, learn_bucket, report_attribution, report_facts
from ..money import Problems
from .reconcile import ReconcileReport, Reconciler
from .report import GuardReport
from ..runs import RecoveryReport
from ..sessions import SessionGuardReport
from ..home import StateStore
from .watchdog import Watchdog

PARTIALS_EVERY_S = 300.0  # how often a pass sweeps a local bucket for killed uploads' partials


def provider_charges(provider: Provider):
    """The provider's checked charges report, when it has one (vast.ai), for the ledger."""
    return provider.account.charge_report if provider.account is not None else None


class Guard:
    def __init__(self, provider: Provider, state: StateStore, budgets: Budgets | Callable[[], Budgets], *,
                 storage: Storage, clock: Callable[[], float] = time.time, emit: Emit | None = None,
                 grace_s: float = 120.0, fresh_s: float = 1800.0, memory: GuardMemory | None = None,
                 recovery: Any | None = None):
        self.provider = provider
        self.storage = storage
        self.recovery = recovery  # a recovery.Recovery for this provider, or None
        self.state = state
        self.clock = clock
        self.emit = emit if emit is not None else (lambda event, data: None)
        self.reconciler = Reconciler(provider, state, storage, clock=clock, grace_s=grace_s, fresh_s=fresh_s)
        self.memory = memory if memory is not None else GuardMemory()  # what outlives this pass
        self.watchdog = Watchdog(provider, state, budgets, clock=clock, emit=emit,
                                 charges=provider_charges(provider), storage=storage, memory=self.memory)
        from ..sessions import SessionGuard

        self.sessions = SessionGuard(provider, state, storage, clock=clock, grace_s=grace_s, fresh_s=fresh_s,
                                     emit=self.emit)

    async def run_once(self, settings_problem: str | None = None,
                       notes: Iterable[tuple[str, str, str]] = ()) -> GuardReport:
        """One pass (:class:`GuardReport`). Its ``ok`` is false when the instances could not be
        listed (then nothing else was checked).
        ``settings_problem``: why the settings in force are the last good ones, to report;
        ``notes``: more (kind, subject, message) problems the caller met before the pass."""
        problems = Problems()
        if settings_problem:
            problems.add(kinds.SETTINGS, "settings", settings_problem)
        for kind, subject, message in notes:
            problems.add(kind, subject, message)
        now = self.clock()
        report, verdicts = ReconcileReport(), []
        recovered: RecoveryReport | None = None  # the recovery's report, when it ran to its end
        sessions: SessionGuardReport | None = None  # the session guard's, likewise
        # ends of runs the bucket did not take last round, before reconcile judges those runs
        await self.watchdog.finish_ends(problems)
        try:
            instances: list[Instance] | None = await self.provider.list()
        except LoraCloudError as exc:
            problems.add(kinds.LISTING, self.provider.name, f"could not list instances, so nothing was checked "
                                                            f"or destroyed this round: {exc.message}")
            instances = None
        if instances is not None:
            first_seen = await self._first_seen(instances, now, problems)
            try:
                facts = await asyncio.to_thread(learn_bucket, self.storage, self.state, clock=self.clock,
                                                memory=self.memory)
            except Exception as exc:  # noqa: BLE001 - a bucket nobody can vouch for: nothing tagged is ours
                why = f"the bucket cannot be read: {type(exc).__name__}: {exc}"
                facts = BucketFacts(self.storage.url, id_problem=why, clock_problem=why)
            report_facts(facts, problems)
            try:
                attributed = await asyncio.to_thread(attribute_all, instances, facts, self.storage,
                                                     run_known=self.reconciler.known_here,
                                                     session_known=self.sessions.known_here)
            except Exception as exc:  # noqa: BLE001 - then nothing is ours this round: nothing touched
                problems.add(kinds.UNEXPECTED, "attribution", f"could not tell whose the instances are, so none "
                                                              f"was touched: {type(exc).__name__}: {exc}")
                attributed = {}
            report_attribution(attributed, instances, problems)
            try:
                report = await self.reconciler.run_once(instances, now=now, first_seen=first_seen, problems=problems,
                                                        facts=facts, attributed=attributed)
            except Exception as exc:  # noqa: BLE001 - the watchdog must run whatever reconcile did
                problems.add(kinds.UNEXPECTED, "reconcile", f"reconcile stopped: {type(exc).__name__}: {exc}")
            try:
                sessions = await self.sessions.run_once(instances, now=now, problems=problems, facts=facts,
                                                        attributed=attributed)
            except Exception as exc:  # noqa: BLE001 - the watchdog must run whatever happened here
                problems.add(kinds.UNEXPECTED, "sessions", f"the session guard stopped: {type(exc).__name__}: {exc}")
            gone = set(report.destroyed) | set(sessions.destroyed if sessions is not None else ())
            remaining = [i for i in instances if str(i.id) not in gone]
            # the budgets hold for this bucket's instances only: another home guards the rest (the
            # recovery below sees the whole listing, but moves only runs this home launched)
            ours = [i for i in remaining if getattr(attributed.get(str(i.id)), "kind", None) is Attribution.OURS]
            try:
                verdicts = await self.watchdog.poll_once(ours, now=now, first_seen=first_seen,
                                                         problems=problems)
            except Exception as exc:  # noqa: BLE001 - reported, and the next pass tries again
                problems.add(kinds.UNEXPECTED, "watchdog", f"watchdog stopped: {type(exc).__name__}: {exc}")
            if self.recovery is not None:  # after the watchdog: the ledger holds this round's spend
                breached = {v.instance_id for v in verdicts if v.level == "breach"}
                try:
                    recovered = (await self.recovery.run_once([i for i in remaining if str(i.id) not in breached],
                                                              now=now, problems=problems))
                except Exception as exc:  # noqa: BLE001 - one phase must never stop the pass
                    problems.add(kinds.UNEXPECTED, "recovery", f"recovery stopped: {type(exc).__name__}: {exc}")
        swept = await self._sweep_partials(now, problems)
        self._announce(problems)
        return GuardReport(ok=instances is not None, reconcile=report, recovery=recovered, swept=tuple(swept),
                           sessions=sessions, budgets=tuple(verdicts), problems=tuple(problems))

    async def _sweep_partials(self, now: float, problems: Problems) -> list[str]:
        """Killed uploads' partial files in a local-folder bucket (GCS leaves none in the bucket)."""
        sweep = getattr(self.storage, "sweep_partials", None)
        if sweep is None or now - self.memory.partials_swept_at < PARTIALS_EVERY_S:
            return []
        self.memory.partials_swept_at = now
        try:
            return await asyncio.to_thread(sweep)
        except Exception as exc:  # noqa: BLE001 - housekeeping must never stop the pass
            problems.add(kinds.UNEXPECTED, "partials", f"could not sweep partial files: {type(exc).__name__}: {exc}")
            return []

    async def _first_seen(self, instances: list[Instance], now: float, problems: Problems) -> dict[str, float]:
        try:
            seen = await asyncio.to_thread(self.state.record_sightings, instances, now)
        except CorruptRecord as exc:
            problems.add_corrupt(exc, self.state.path)
            return {str(i.id): self.memory.seen.setdefault(str(i.id), now) for i in instances}
        self.memory.seen.clear()  # the store keeps them again
        self.memory.seen.update(seen)
        return seen

    def _announce(self, problems: Problems) -> None:
        """Tell the sidebar about each problem once, and again only after it went away and came back."""
        current = {(p.kind, p.subject) for p in problems}
        for p in problems:
            if (p.kind, p.subject) not in self.memory.announced:
                self.emit(GUARD_EVENT, {"kind": "problem", "problem": p.kind, "subject": p.subject,
                                        "message": p.message})
        self.memory.announced = current
