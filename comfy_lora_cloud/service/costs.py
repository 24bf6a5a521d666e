"""The cost ledger: what each of our instances has cost, today, this month and per run.

Between two polls an instance is assumed to stay in the state it was seen in; each poll
(:meth:`CostLedger.accrue`) appends one ``gpu`` line (while running, at the GPU part of
``dph_total``) and one ``storage`` line (every state but offline) per instance, from the last
accrual to now. vast.ai bills per second on the same meters (reference §6), so the estimate
is close; :meth:`CostLedger.reconcile_charges` then books the difference with the provider's
``/charges/`` as one ``charge`` line per instance, so the ledger converges on what was billed.

An instance is accrued from when this controller first saw it (``first_seen``, our clock), never
from the provider's start date: a provider clock hours behind ours must not book hours of spend
on a new instance. The charge rows come validated from the provider client
(``providers.vast.parse_charges``: a finite amount, never negative), the one place that checks them.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any, Callable, Iterable

from ..errors import CorruptRecord
from ..models import Cost, Instance, InstanceState
from .state import OnCorrupt, StateStore

log = logging.getLogger(__name__)


def _log(exc: CorruptRecord) -> None:
    log.warning("%s; accruing from first sight", exc.message)


def _skip(on_corrupt: OnCorrupt | None) -> dict[str, OnCorrupt]:
    return {"on_corrupt": on_corrupt} if on_corrupt is not None else {}

_CURSOR = "ledger:accrued:"  # kv key prefix -> epoch seconds accrued up to, per instance
_CHARGED = "ledger:charged:"  # kv key prefix -> provider-billed $ already booked, per instance


def month_start(now: float) -> float:
    d = datetime.fromtimestamp(now)
    return datetime(d.year, d.month, 1).timestamp()


def day_start(now: float) -> float:
    d = datetime.fromtimestamp(now)
    return datetime(d.year, d.month, d.day).timestamp()


def usd_in(costs: Iterable[Cost], start: float, end: float) -> float:
    """Money inside ``[start, end]``: spans pro rata, point lines (charges) at their start."""
    total = 0.0
    for c in costs:
        if c.end > c.start:
            overlap = min(c.end, end) - max(c.start, start)
            if overlap > 0:
                total += c.usd * overlap / (c.end - c.start)
        elif start <= c.start <= end:
            total += c.usd
    return total


def billed_by_instance(charges: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Instance id -> $ billed, from ``/charges/`` rows (``source: "instance-<id>"``), as the
    provider client validated them (``providers.vast.parse_charges``)."""
    out: dict[str, float] = {}
    for row in charges:
        src = str(row.get("source") or "")
        if src.startswith("instance-"):
            iid = src[len("instance-"):]
            out[iid] = out.get(iid, 0.0) + float(row.get("amount") or 0.0)
    return out


class CostLedger:
    def __init__(self, state: StateStore, clock: Callable[[], float] = time.time):
        self.state = state
        self.clock = clock

    def accrue(self, instances: Iterable[Instance], now: float | None = None, *,
               first_seen: dict[str, float] | None = None, on_corrupt: OnCorrupt | None = None) -> float:
        """Book every instance's spend since its last accrual (or since ``first_seen``, else now);
        returns the $ booked. A cursor that is not a number is handed to ``on_corrupt`` and the
        instance is accrued from ``first_seen`` again."""
        now = self.clock() if now is None else now
        first_seen = first_seen or {}
        booked = 0.0
        for inst in instances:
            key = f"{_CURSOR}{inst.provider}:{inst.id}"
            try:
                cursor = self.state.get_kv_float(key)
            except CorruptRecord as exc:
                if "key" not in exc.details:  # the store itself, not this value
                    raise
                (on_corrupt or _log)(exc)
                cursor = None
            since = cursor if cursor is not None else first_seen.get(str(inst.id), now)
            span = now - since
            if span <= 0:
                continue
            gpu_dph = max(inst.dph_total - inst.storage_dph, 0.0)
            if inst.state is InstanceState.RUNNING and gpu_dph > 0:
                usd = gpu_dph * span / 3600.0
                self.state.add_cost(Cost(str(inst.id), inst.run_id, "gpu", usd, since, now))
                booked += usd
            if inst.state is not InstanceState.OFFLINE and inst.storage_dph > 0:
                usd = inst.storage_dph * span / 3600.0
                self.state.add_cost(Cost(str(inst.id), inst.run_id, "storage", usd, since, now))
                booked += usd
            self.state.set_kv(key, repr(now))
        return booked

    def reconcile_charges(self, charges: Iterable[dict[str, Any]], run_of: dict[str, str | None],
                          now: float | None = None) -> float:
        """Book (provider total - our total) per instance as a ``charge`` line; returns the sum booked.

        ``run_of`` maps instance id -> run id (ours only: other instances' charges are ignored).
        """
        now = self.clock() if now is None else now
        by_instance = billed_by_instance(charges)
        booked = 0.0
        ledger = self.state.costs()
        for iid, billed in by_instance.items():
            if iid not in run_of:
                continue
            ours = sum(c.usd for c in ledger if c.instance_id == iid)
            delta = billed - ours
            if abs(delta) >= 1e-6:
                self.state.add_cost(Cost(iid, run_of[iid], "charge", delta, now, now, source="charges"))
                booked += delta
            self.state.set_kv(f"{_CHARGED}{iid}", json.dumps({"billed": billed, "at": now}))
        return booked

    def month_usd(self, now: float | None = None, *, on_corrupt: OnCorrupt | None = None) -> float:
        now = self.clock() if now is None else now
        start = month_start(now)
        return usd_in(self.state.costs(since=start, **_skip(on_corrupt)), start, now)

    def run_usd(self, run_id: str, *, on_corrupt: OnCorrupt | None = None) -> float:
        return sum(c.usd for c in self.state.costs(run_id=run_id, **_skip(on_corrupt)))

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Today, this month (local calendar) and per run, in $."""
        now = self.clock() if now is None else now
        m0, d0 = month_start(now), day_start(now)
        lines = self.state.costs(since=m0)
        runs: dict[str, float] = {}
        instances: dict[str, float] = {}
        for c in self.state.costs():
            instances[c.instance_id] = instances.get(c.instance_id, 0.0) + c.usd
            if c.run_id:
                runs[c.run_id] = runs.get(c.run_id, 0.0) + c.usd
        return {
            "today_usd": round(usd_in(lines, d0, now), 4),
            "month_usd": round(usd_in(lines, m0, now), 4),
            "per_run_usd": {k: round(v, 4) for k, v in sorted(runs.items())},
            "per_instance_usd": {k: round(v, 4) for k, v in sorted(instances.items())},
            "reconciled_with_charges": any(c.source == "charges" for c in lines),
        }
