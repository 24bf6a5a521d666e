"""The watchdog: every poll it books costs, checks the budgets and destroys what breaks one.

One poll (:meth:`Watchdog.poll_once`) lists our labelled instances, accrues the ledger, evaluates
:mod:`budgets` and destroys each instance with a breach, so a budget is enforced within one
poll interval. A warning at 80 % of a limit is emitted once per instance and budget. Events
go to an injectable callback ``emit(event_name, data)`` (ComfyUI sends them to the sidebar).
A failed listing is an error for that poll, never "no instances".
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from ..errors import LoraCloudError
from ..models import Instance, RunState
from ..providers.base import Provider
from .budgets import Budgets, Verdict, evaluate
from .costs import CostLedger
from .events import BUDGET_EVENT, Emit
from .state import StateStore

log = logging.getLogger(__name__)

Charges = Callable[[float, float], Awaitable[list[dict[str, Any]]]]


class Watchdog:
    def __init__(self, provider: Provider, state: StateStore, budgets: Budgets | Callable[[], Budgets], *,
                 clock: Callable[[], float] = time.time, emit: Emit | None = None, interval: float = 30.0,
                 charges: Charges | None = None):
        self.provider = provider
        self.state = state
        self._budgets = budgets
        self.clock = clock
        self.emit = emit if emit is not None else (lambda event, data: None)
        self.interval = interval
        self.charges = charges
        self.ledger = CostLedger(state, clock)
        self._warned: set[tuple[str, str]] = set()

    @property
    def budgets(self) -> Budgets:
        return self._budgets() if callable(self._budgets) else self._budgets

    async def poll_once(self) -> list[Verdict]:
        now = self.clock()
        instances = await self.provider.list()
        await asyncio.to_thread(self._book, instances, now)
        if self.charges is not None:
            await self._reconcile_charges(instances, now)
        run_ids = {i.run_id for i in instances if i.run_id}
        run_usd = await asyncio.to_thread(lambda: {r: self.ledger.run_usd(r) for r in run_ids})
        month = await asyncio.to_thread(self.ledger.month_usd, now)
        verdicts = evaluate(self.budgets, instances, run_usd=run_usd, month_usd=month, now=now)
        destroyed: set[str] = set()
        for v in verdicts:
            if v.level == "breach" and v.instance_id not in destroyed:
                destroyed.add(v.instance_id)
                await self._enforce(v)
            elif v.level == "warn" and (v.budget, v.instance_id) not in self._warned:
                self._warned.add((v.budget, v.instance_id))
                self.emit(BUDGET_EVENT, {"kind": "warning", **v.to_dict()})
        return verdicts

    def _book(self, instances: list[Instance], now: float) -> None:
        self.ledger.accrue(instances, now)
        for inst in instances:
            self.state.put_instance(inst, inst.run_id)

    async def _reconcile_charges(self, instances: list[Instance], now: float) -> None:
        assert self.charges is not None
        rows = await self.state_rows()
        run_of = {r["id"]: r["run_id"] for r in rows}
        try:
            charges = await self.charges(now - 32 * 86400, now)
        except LoraCloudError as exc:
            log.warning("could not read charges: %s", exc.message)
            return
        await asyncio.to_thread(self.ledger.reconcile_charges, charges, run_of, now)

    async def state_rows(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.state.list_instances, include_destroyed=True)

    async def _enforce(self, v: Verdict) -> None:
        log.warning("budget breach: %s; destroying", v.message)
        try:
            await self.provider.destroy(v.instance_id)
        except LoraCloudError as exc:
            self.emit(BUDGET_EVENT, {"kind": "enforce_failed", **v.to_dict(), "error": exc.message})
            return
        now = self.clock()
        await asyncio.to_thread(self.state.mark_instance_destroyed, self.provider.name, v.instance_id, now)
        if v.run_id and await asyncio.to_thread(self.state.get_run, v.run_id):
            await asyncio.to_thread(self.state.update_run, v.run_id, state=RunState.FAILED,
                                    error=f"stopped by the watchdog: {v.message}")
        self.emit(BUDGET_EVENT, {"kind": "enforced", "action": "destroyed", **v.to_dict()})

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a failing poll is logged and retried next interval."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except LoraCloudError as exc:
                log.warning("watchdog poll failed: %s", exc.message)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except asyncio.TimeoutError:
                pass
