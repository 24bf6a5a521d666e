"""The watchdog: every poll it books costs, checks the budgets and destroys what breaks one.

One poll (:meth:`Watchdog.poll_once`) takes our labelled instances (listed by the caller, or
listed now; the guard hands it only its own bucket's, ``ownership.attribute``: another home's
instances are held to that home's budgets, never to ours), accrues the ledger, books the
provider's ``/charges/`` against it, evaluates :mod:`budgets` and destroys each instance with a
breach (through :func:`~..money.destroy.destroy_instance`), so a budget is enforced within one poll
interval. A warning at 80 % of a limit is emitted once per instance and budget; the month budget
is told as a whole instead, once per crossing of 80 % and of 100 % (:meth:`Watchdog._tell_month`),
and no edge tells it again. Events go to an injectable callback ``emit(event_name, data)``
(ComfyUI sends them to the sidebar).

Whose limits hold a run (:meth:`Watchdog._run_limits`):

* the home that launched it (its store has the run) holds it to its current settings, so a
  ``budget set`` reaches its running runs; a run whose record carries its own max_run_usd
  (``train start``'s request, the Launch node's ``max_usd``) is held to that instead
  (:func:`~.budgets.run_limit`);
* every other home holds it to the limits it was launched under, recorded in its
  ``spec.json`` (:func:`~..training.spec.read_limits`). Where this home's own settings would
  have destroyed it, a ``run_limits`` problem names both limits instead: another home's
  budget is not this home's to enforce. A run that records none (an older version launched
  it) or whose record cannot be believed is held only to the hard maxima of ``settings.py``,
  and reported the same way;
* a home that cannot tell (its store cannot be read, or was rebuilt after damage less than
  the longest a run may live ago, ``settings.MAX_RUN_HOURS``, so a run missing from it may be
  one it launched): the recorded limits where there are some, else its own settings.

The month budget is each home's own. A breach destroys the instance and ends its run through
:mod:`..runs.lifecycle`: the bucket first, then the store; an end the bucket did not take is written
again every guard round (:meth:`Watchdog.finish_ends`) until both say it, with one event.

Every budget that can be checked is checked, whatever else fails: a ``/charges/`` answer that
cannot be read leaves the ledger's estimate standing; a damaged state store leaves max $/hr and
the hours since this controller first saw the instance (kept in memory by the caller), plus a
run's spend and the month's spend as ``/charges/`` billed them (the month: every row of ours in
it, :func:`~.costs.month_usd_from_charges`; a ``budget`` problem says the month was held to the
provider's bill, or to the part of it that could be read, a lower bound); what cannot be checked
(no store and no charges) is reported in ``problems``. A failed listing is an error for that
poll, never "no instances".
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any, Awaitable, Callable

from ...errors import CorruptRecord, LoraCloudError, StorageError
from ...models import Instance, RunState
from ...providers.base import Provider, run_label
from ...settings import MAX_RUN_HOURS
from ...storage.base import Storage
from ...training.spec import RunLimits, read_limits
from ..money import kinds
from ..money import Budgets, Verdict, evaluate, month_level, month_news, run_limit
from ..money import destroy_instance
from ..money import CostLedger, known_rates, month_start, month_usd_from_charges
from ..money import CHARGES_WINDOW_S, billed_by_instance, cap_charges
from ..events import BUDGET_EVENT, Emit
from .memory import GuardMemory
from ..money import Problems
from ..runs import end_run, finish_pending
from ..home import StateStore
from .store_rebuild import REBUILT_KEY

log = logging.getLogger(__name__)

Charges = Callable[[float, float], Awaitable[Any]]  # -> providers.vast.ChargeReport
MONTH_TOLD = "budget:month_told"  # kv -> [month start, level last told]: the month budget's crossings


class Watchdog:
    def __init__(self, provider: Provider, state: StateStore, budgets: Budgets | Callable[[], Budgets], *,
                 clock: Callable[[], float] = time.time, emit: Emit | None = None, interval: float = 30.0,
                 charges: Charges | None = None, storage: Storage | None = None,
                 memory: GuardMemory | None = None):
        self.provider = provider
        self.state = state
        self._budgets = budgets
        self.clock = clock
        self.emit = emit if emit is not None else (lambda event, data: None)
        self.interval = interval
        self.charges = charges
        self.storage = storage  # where a stopped run's end is written for every reader
        self.ledger = CostLedger(state, clock)
        self.memory = memory if memory is not None else GuardMemory()  # warnings sent, last budgets

    @property
    def budgets(self) -> Budgets:
        return self._budgets() if callable(self._budgets) else self._budgets

    def _current_budgets(self, problems: Problems) -> Budgets:
        """The budgets now; when they cannot be read (a config file broken mid-run), the last
        ones that could, else the defaults: a broken file must not switch enforcement off."""
        try:
            self.memory.budgets = self.budgets
        except LoraCloudError as exc:
            problems.add(kinds.BUDGET, "settings", f"budgets unreadable, enforcing the last known ones: {exc.message}")
        return self.memory.budgets

    async def poll_once(self, instances: list[Instance] | None = None, *, now: float | None = None,
                        first_seen: dict[str, float] | None = None,
                        problems: Problems | None = None) -> list[Verdict]:
        problems = problems if problems is not None else Problems()
        now = self.clock() if now is None else now
        if instances is None:
            instances = await self.provider.list()
        budgets = self._current_budgets(problems)
        store_ok = True
        if first_seen is None:
            try:
                first_seen = await asyncio.to_thread(self.state.record_sightings, instances, now)
            except CorruptRecord as exc:
                problems.add_corrupt(exc, self.state.path)
                first_seen, store_ok = {str(i.id): now for i in instances}, False
        if store_ok:
            store_ok = await self._accrue(instances, now, first_seen, problems)
        report = await self._charges(instances, now, store_ok, budgets, problems)
        run_usd, month_usd = await asyncio.to_thread(self._spend, instances, now, store_ok, report, problems)
        run_ids = {i.run_id for i in instances if i.run_id}
        limits, elsewhere = await asyncio.to_thread(self._run_limits, run_ids, budgets, store_ok, now, problems)
        verdicts = evaluate(budgets, instances, run_usd=run_usd, month_usd=month_usd, now=now, first_seen=first_seen,
                            run_limits=limits)
        self._report_held(instances, verdicts, budgets, limits, elsewhere, run_usd=run_usd, now=now,
                          first_seen=first_seen, problems=problems)
        destroyed: set[str] = set()
        for v in verdicts:
            if v.level == "breach" and v.instance_id not in destroyed:
                destroyed.add(v.instance_id)
                await self._enforce(v, problems)
            elif v.level == "warn" and v.budget != "max_month_usd" \
                    and (v.budget, v.instance_id) not in self.memory.warned:  # the month: told whole, below
                self.memory.warned.add((v.budget, v.instance_id))
                self.emit(BUDGET_EVENT, {"kind": "warning", **v.to_dict()})
        await asyncio.to_thread(self._tell_month, budgets, month_usd, now, store_ok)
        return verdicts

    def _tell_month(self, budgets: Budgets, month_usd: float | None, now: float, store_ok: bool) -> None:
        """The month budget's one event per crossing (80 %, then 100 %), for the month as a whole,
        whatever the instances: what was told is kept in the store, so neither the next round nor
        another process (cron, the CLI) tells it again; a fall back below (a raised budget, a new
        month) lets the next crossing be told."""
        if month_usd is None:
            return
        level = month_level(month_usd, budgets.max_month_usd)
        now_told = [month_start(now), level]
        told = self.memory.month_told
        if store_ok:
            try:
                raw = self.state.get_kv(MONTH_TOLD)
                told = json.loads(raw) if raw else None
            except (CorruptRecord, ValueError):
                told = self.memory.month_told
        if told == now_told:
            return
        self.memory.month_told = now_told
        if store_ok:
            try:
                self.state.set_kv(MONTH_TOLD, json.dumps(now_told))
            except CorruptRecord:
                pass  # this process remembers it (GuardMemory); the store is reported by whoever met it
        if level is not None:
            self.emit(BUDGET_EVENT, month_news(level, month_usd, budgets.max_month_usd))

    async def _accrue(self, instances: list[Instance], now: float, first_seen: dict[str, float],
                      problems: Problems) -> bool:
        try:
            await asyncio.to_thread(self.ledger.accrue, instances, now, first_seen=first_seen,
                                    on_corrupt=lambda exc: problems.add(kinds.CORRUPT_ROW, "ledger cursor",
                                                                        f"{exc.message}; accrued from first sight"))
        except CorruptRecord as exc:
            problems.add_corrupt(exc, self.state.path)
            return False
        return True

    async def _charges(self, instances: list[Instance], now: float, store_ok: bool, budgets: Budgets,
                       problems: Problems) -> Any | None:
        """What the provider billed (its checked ``ChargeReport``, each row no bigger than its
        instance's rate allows; None when unknown); booked into the ledger when the answer was
        read whole and the store can take it. A row above that (:func:`~.costs.cap_charges`) is
        a ``charges`` problem naming it, counted at the most the rate allows."""
        if self.charges is None:
            return None
        try:
            report = await self.charges(now - CHARGES_WINDOW_S, now)
        except LoraCloudError as exc:
            problems.add(kinds.CHARGES, "/charges/", f"could not read charges (the estimate stands): {exc.message}")
            return None
        for i, message in enumerate(report.problems):
            problems.add(kinds.CHARGES, f"/charges/#{i}", message)
        rates = await asyncio.to_thread(self._rates, instances, store_ok)
        since = now - CHARGES_WINDOW_S
        rows, suspects = cap_charges(report.rows, rates, now=now, since=since, fallback_dph=budgets.max_dph)
        for sc in suspects:
            problems.add(kinds.CHARGES, f"/charges/instance-{sc.instance_id}", sc.message)
        report = dataclasses.replace(report, rows=rows)
        if not report.complete:
            problems.add(kinds.CHARGES, "/charges/", "charges were not read whole: nothing booked, the estimate stands")
        elif store_ok:
            await asyncio.to_thread(self._book_charges, report.rows, now, suspects, problems)
        return report

    def _rates(self, instances: list[Instance], store_ok: bool) -> dict[str, float]:
        """$/h of each instance as listed now and, with a readable store, as it was last seen."""
        rows: list[dict[str, Any]] = []
        if store_ok:
            try:
                rows = self.state.list_instances(include_destroyed=True, on_corrupt=lambda exc: None)
            except CorruptRecord:
                pass  # reported by whoever met it first; the listing's rates stand
        return known_rates(instances, rows)

    def _book_charges(self, rows: list[dict[str, Any]], now: float, suspects: list[Any], problems: Problems) -> None:
        try:
            self.ledger.book_charges(rows, now, suspects=suspects,
                                     on_corrupt=lambda exc: problems.add(kinds.CORRUPT_ROW, "instances", exc.message))
        except CorruptRecord as exc:
            problems.add_corrupt(exc, self.state.path)

    def _spend(self, instances: list[Instance], now: float, store_ok: bool, report: Any | None,
               problems: Problems) -> tuple[dict[str, float], float | None]:
        """$ per run of the listed instances, and this month's $ (None: unknown). From the ledger;
        without one, from ``/charges/``: a run's spend is what it billed the run's listed
        instances, the month's what it billed our instances this month."""
        def skip(exc: CorruptRecord) -> None:  # each line past what its rate allows on its own
            line = exc.details.get("line")
            problems.add(kinds.CORRUPT_ROW, "ledger" if line is None else f"ledger line {line}", exc.message)

        run_ids = {i.run_id for i in instances if i.run_id}
        if store_ok:
            try:
                return ({r: self.ledger.run_usd(r, on_corrupt=skip) for r in run_ids},
                        self.ledger.month_usd(now, on_corrupt=skip))
            except CorruptRecord as exc:
                problems.add_corrupt(exc, self.state.path)
        run_usd: dict[str, float] = {}
        billed = billed_by_instance(report.rows) if report is not None else None
        if billed is not None:
            for inst in instances:
                if inst.run_id:
                    run_usd[inst.run_id] = run_usd.get(inst.run_id, 0.0) + billed.get(str(inst.id), 0.0)
        for run_id in sorted(run_ids - set(run_usd)):
            problems.add(kinds.BUDGET, run_id, f"max_run_usd of run {run_id} not checked: no ledger and no charges")
        return run_usd, self._month_from_charges(instances, now, report, problems)

    def _run_limits(self, run_ids: Any, budgets: Budgets, store_ok: bool, now: float,
                    problems: Problems) -> tuple[dict[str, Budgets], dict[str, str]]:
        """The budgets each run is held to (the module docstring), and the runs held to limits
        not this home's: run id -> "recorded" (another home's run, its recorded limits),
        "unsure" (a rebuilt store cannot say whose; its recorded limits) or "none" (another home's
        run with no limits that can be read: the hard maxima)."""
        limits: dict[str, Budgets] = {}
        elsewhere: dict[str, str] = {}
        rebuilt = store_ok and self._rebuilt_since(now - MAX_RUN_HOURS * 3600.0)
        for run_id in sorted(run_ids):
            launched_here: bool | None = None  # None: the store cannot tell
            run = None
            if store_ok:
                try:
                    run = self.state.get_run(run_id)
                    launched_here = True if run is not None else None if rebuilt else False
                except CorruptRecord as exc:
                    problems.add_corrupt(exc, self.state.path)
                    if exc.details.get("run_id") == run_id:
                        launched_here = True  # its row is here: this home's, held to the settings
            if launched_here:
                if run is not None:
                    limits[run_id] = dataclasses.replace(budgets, max_run_usd=run_limit(run.spec, budgets.max_run_usd))
                continue
            if self.storage is None:
                continue
            recorded, why = self._recorded(run_id)
            if recorded is None and launched_here is None:  # nothing to go by but this home's settings
                if why:
                    problems.add(kinds.RUN_LIMITS, run_id, f"the limits run {run_id} was launched under cannot be "
                                                           f"read ({why}); this home cannot tell whether it launched "
                                                           "it, so its own settings hold it")
                continue
            if why:
                problems.add(kinds.RUN_LIMITS, run_id, f"the limits run {run_id} was launched under cannot be read "
                                                       f"({why}): held to the hard maxima, not to this home's "
                                                       "settings")
            held = recorded or RunLimits.hard_maxima()
            limits[run_id] = Budgets(held.max_dph, held.max_run_usd, budgets.max_month_usd, held.max_hours)
            elsewhere[run_id] = "none" if recorded is None else "recorded" if launched_here is False else "unsure"
        return limits, elsewhere

    def _rebuilt_since(self, since: float) -> bool:
        """Whether this home's store was started afresh after damage since ``since``."""
        try:
            raw = self.state.get_kv(REBUILT_KEY)
            at = json.loads(raw).get("rebuilt_at") if raw else None
        except (CorruptRecord, ValueError, AttributeError):
            return False
        return isinstance(at, (int, float)) and not isinstance(at, bool) and at >= since

    def _recorded(self, run_id: str) -> tuple[RunLimits | None, str]:
        """The run's recorded limits (None: none recorded), and why they cannot be read ('')."""
        key = (self.storage.url, run_id)
        if key in self.memory.run_limits:
            return self.memory.run_limits[key], ""
        try:
            limits = read_limits(self.storage, run_id)
        except StorageError as exc:  # CorruptRecord too: a host-written spec that cannot be believed
            return None, exc.message
        if limits is not None:
            self.memory.run_limits[key] = limits
        return limits, ""

    def _report_held(self, instances: list[Instance], verdicts: list[Verdict], budgets: Budgets,
                     limits: dict[str, Budgets], elsewhere: dict[str, str], *, run_usd: dict[str, float], now: float,
                     first_seen: dict[str, float], problems: Problems) -> None:
        """A ``run_limits`` problem for each run of another home that this home's own settings
        would have destroyed, naming both limits: it is held to its own instead."""
        breached = {(v.instance_id, v.budget) for v in verdicts if v.level == "breach"}
        for inst in instances:
            kind = elsewhere.get(inst.run_id or "")
            if kind is None:
                continue
            held = limits[str(inst.run_id)]
            mine = [v for v in evaluate(budgets, [inst], run_usd=run_usd, month_usd=None, now=now,
                                        first_seen=first_seen)
                    if v.level == "breach" and (v.instance_id, v.budget) not in breached]
            if not mine:
                continue
            differences = "; ".join(f"this home's {v.budget} is {_amount(v.budget, v.limit)}, the run's "
                                    f"{_amount(v.budget, getattr(held, v.budget))} (now {_amount(v.budget, v.value)})"
                                    for v in mine)
            whose = {"recorded": "another home launched it, and the limits it was launched under hold it",
                     "unsure": "this home's store was rebuilt and cannot say it launched it, so the limits it was "
                               "launched under hold it",
                     "none": "another home launched it and it records no limits of its own (an older version "
                             "launched it, or they cannot be read), so only the hard maxima hold it"}[kind]
            problems.add(kinds.RUN_LIMITS, inst.run_id,
                         f"run {inst.run_id} (instance {inst.id}) is kept: {whose}; {differences}. Another home's "
                         f"budget is not this home's to enforce: stop it with `lora-cloud train stop {inst.run_id}` "
                         "if it should not go on")

    @staticmethod
    def _month_from_charges(instances: list[Instance], now: float, report: Any | None,
                            problems: Problems) -> float | None:
        """The month's spend while the ledger cannot be read: what ``/charges/`` billed our
        instances this month (a lower bound when the answer was not read whole), said in a
        ``budget`` problem; None, and a problem saying so, when there are no charges either."""
        if report is None:
            problems.add(kinds.BUDGET, "month", "max_month_usd not checked: the ledger cannot be read and vast.ai's "
                                                "/charges/ could not be read either")
            return None
        usd = month_usd_from_charges(report.rows, now, (str(i.id) for i in instances))
        if report.complete:
            problems.add(kinds.BUDGET, "month", f"the ledger cannot be read: max_month_usd enforced from vast.ai's "
                                                f"/charges/ (${usd:.2f} this month)")
        else:
            problems.add(kinds.BUDGET, "month", f"the ledger cannot be read and /charges/ was not read whole: "
                                                f"max_month_usd enforced against the ${usd:.2f} it showed this month "
                                                "(at least that much was spent)")
        return usd

    async def _enforce(self, v: Verdict, problems: Problems) -> None:
        log.warning("budget breach: %s; destroying", v.message)
        done = await destroy_instance(self.provider, self.state, v.instance_id, why=v.message,
                                      label=run_label(v.run_id) if v.run_id else None, clock=self.clock,
                                      problems=problems)
        if not done.gone:
            self.emit(BUDGET_EVENT, {"kind": "enforce_failed", **v.to_dict(), "error": done.error})
            return
        self.emit(BUDGET_EVENT, {"kind": "enforced", "action": "destroyed", **v.to_dict()})
        if v.run_id:
            await self._end(v.run_id, f"stopped by the watchdog: {v.message}", problems)

    async def _end(self, run_id: str, message: str, problems: Problems) -> None:
        """End the run FAILED: the bucket first, then the store (:func:`~..runs.lifecycle.end_run`)."""
        try:
            ended = await asyncio.to_thread(end_run, self.state, self.storage, run_id, RunState.FAILED, message)
        except CorruptRecord as exc:  # the bucket has the end; the store could not take it
            problems.add_corrupt(exc, self.state.path)
            return
        if ended.problem:
            problems.add(kinds.BUCKET, run_id, f"could not mark run {run_id} failed in the bucket ({ended.problem}): "
                                               "it stays live in this home's records, and the end is written "
                                               "again next round")

    async def finish_ends(self, problems: Problems) -> None:
        """Write again the ends of runs the bucket did not take (:func:`~..runs.lifecycle.finish_pending`);
        the guard calls it first in each round, before reconcile judges those runs."""
        try:
            ended = await asyncio.to_thread(finish_pending, self.state, self.storage)
        except CorruptRecord as exc:
            problems.add_corrupt(exc, self.state.path)
            return
        for e in ended:
            if e.problem:
                problems.add(kinds.BUCKET, e.run_id, f"the end of run {e.run_id} still cannot be written to the "
                                                     f"bucket ({e.problem}): written again next round")

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a failing poll is logged and retried next interval."""
        while not stop.is_set():
            try:
                await self.finish_ends(Problems())
                await self.poll_once()
            except LoraCloudError as exc:
                log.warning("watchdog poll failed: %s", exc.message)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass


def _amount(budget: str, value: float) -> str:
    if budget == "max_run_hours":
        return f"{value:.2f} h"
    return f"${value:.2f}/hr" if budget == "max_dph" else f"${value:.2f}"
