"""Reconcile: make the provider's instances and the state store agree, so nothing bills unowned.

At start and periodically (:meth:`Reconciler.run_once`):

* an instance labelled ``lora-cloud:<run>`` whose run is live in the store is *owned*; if the
  store does not know its id yet (the controller died between create and recording it), the id
  is adopted into the run;
* an instance with our label that no live run owns is destroyed once it has been seen unowned
  for ``grace_s`` (a launch in another process may be between create and record), and the
  destroy is confirmed by reading the instance back;
* a live run whose recorded instance is gone is marked LOST; a run still PENDING/LAUNCHING with
  no instance after ``grace_s`` is marked FAILED (the launch died before create).

``is_live_elsewhere(run_id)`` lets a caller protect runs another controller owns (for example
one whose ``runs/<id>/status.json`` in the bucket is live). A failed listing raises: it is never
read as "no instances".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ..errors import LoraCloudError
from ..models import RunState
from ..providers.base import Provider
from .state import StateStore

log = logging.getLogger(__name__)

_SEEN = "reconcile:unowned_since:"
LAUNCH_STATES = (RunState.PENDING, RunState.LAUNCHING)


@dataclass
class ReconcileReport:
    owned: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # unowned, inside the grace period
    lost_runs: list[str] = field(default_factory=list)
    ended_runs: list[str] = field(default_factory=list)  # instance gone after the trainer reported the end
    failed_runs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return dict(self.__dict__)


class Reconciler:
    def __init__(self, provider: Provider, state: StateStore, *, clock: Callable[[], float] = time.time,
                 grace_s: float = 120.0,
                 is_live_elsewhere: Callable[[str], Awaitable[bool]] | None = None,
                 reported_state: Callable[[str], RunState | None] | None = None):
        self.provider = provider
        # what the run's trainer last wrote to the bucket (blocking; called from a thread): a run
        # whose instance is gone after it reported "done" finished, it was not lost
        self.reported_state = reported_state
        self.state = state
        self.clock = clock
        self.grace_s = grace_s
        self.is_live_elsewhere = is_live_elsewhere

    async def run_once(self) -> ReconcileReport:
        report = ReconcileReport()
        now = self.clock()
        instances = await self.provider.list()
        seen_ids = {str(i.id) for i in instances}
        for inst in instances:
            iid = str(inst.id)
            run = await asyncio.to_thread(self.state.get_run, inst.run_id) if inst.run_id else None
            live = run is not None and not run.state.is_terminal
            if not live and inst.run_id and self.is_live_elsewhere is not None:
                live = await self.is_live_elsewhere(inst.run_id)
            if live:
                report.owned.append(iid)
                await asyncio.to_thread(self.state.set_kv, _SEEN + iid, "")
                if run is not None and run.instance_id != iid:
                    await asyncio.to_thread(self._adopt, run.id, inst)
                    report.adopted.append(iid)
                continue
            since_raw = await asyncio.to_thread(self.state.get_kv, _SEEN + iid)
            since = float(since_raw) if since_raw else now
            if not since_raw:
                await asyncio.to_thread(self.state.set_kv, _SEEN + iid, repr(now))
            if now - since < self.grace_s:
                report.waiting.append(iid)
                continue
            try:
                await self.provider.destroy(iid)  # confirms by reading back
            except LoraCloudError as exc:
                report.errors.append(f"destroy {iid}: {exc.message}")
                continue
            await asyncio.to_thread(self.state.mark_instance_destroyed, self.provider.name, iid, now)
            report.destroyed.append(iid)
            log.warning("destroyed unowned instance %s (label %r)", iid, inst.label)
        await asyncio.to_thread(self._settle_runs, seen_ids, now, report)
        return report

    def _adopt(self, run_id: str, inst) -> None:
        fields = {"instance_id": str(inst.id), "gpu": inst.gpu_name, "dph": inst.dph_total}
        run = self.state.get_run(run_id)
        if run is not None and run.state in LAUNCH_STATES:
            fields["state"] = RunState.STARTING
        self.state.update_run(run_id, **fields)
        self.state.put_instance(inst, run_id)

    def _settle_runs(self, seen_ids: set[str], now: float, report: ReconcileReport) -> None:
        for run in self.state.list_runs(live_only=True, limit=10_000):
            if run.provider != self.provider.name:
                continue
            if run.instance_id:
                if run.instance_id not in seen_ids:
                    reported = self.reported_state(run.id) if self.reported_state else None
                    if reported is not None and reported.is_terminal:
                        self.state.update_run(run.id, state=reported)
                        report.ended_runs.append(run.id)
                    else:
                        self.state.update_run(run.id, state=RunState.LOST, error=(
                            f"instance {run.instance_id} vanished (not listed by {run.provider})"))
                        report.lost_runs.append(run.id)
                    self.state.mark_instance_destroyed(run.provider, run.instance_id, now)
            elif run.state in LAUNCH_STATES and now - run.updated_at >= self.grace_s:
                self.state.update_run(run.id, state=RunState.FAILED,
                                      error="the launch was interrupted before an instance was created")
                report.failed_runs.append(run.id)

    async def run(self, stop: asyncio.Event, interval: float = 300.0) -> None:
        """Reconcile now, then every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                report = await self.run_once()
                if report.destroyed or report.lost_runs or report.errors:
                    log.warning("reconcile: %s", report.to_dict())
            except LoraCloudError as exc:
                log.warning("reconcile failed: %s", exc.message)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
