"""Refill a state store started in place of a damaged one (:meth:`StateStore.open`).

What the guard needs from the store is when it first saw each instance: the hours budget counts
from there. A new store knows nothing, so every age would start again at zero; a store damaged
again and again would then let a run bill forever. The bucket remembers what the store lost: a
run's ``spec.json`` is written once, at launch, and its ``status.json`` on every report, both
stamped by the bucket's own clock. For an instance of a run live in the bucket, the time between
those two writes is how long the run has been going (at least: the last report is at most a few
minutes old), measured on one clock, whatever this machine's says. That age is recorded as
first seen; an instance without such a run (an orphan, another bucket's, a remote ComfyUI
session, whose image keeps its own deadline) counts from the earliest this process saw it, else now.
An age is only ever moved earlier, never later.

The money the lost ledger held comes back the same way it is checked: every ``/charges/`` row of
ours in the ledger's window (a listed instance, or a label this pack gives) whose instance is no
longer listed is recorded as a destroyed instance, so the watchdog books what the provider billed
for it into the new ledger as it books every charge (capped by the rate, suspects kept apart),
and the month budget counts the instances destroyed before the damage.

Runs themselves are not copied into the store: the bucket stays their witness (a live status
keeps an instance owned), and a row copied from another controller's run would make this one
end that run when its instance moves. Who owns an instance is then judged as usual: an orphan
with no run anywhere is destroyed after the grace period, a run live in the bucket is kept.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Awaitable, Callable, Mapping

from ...errors import LoraCloudError
from ...models import Instance, InstanceState
from ...providers.base import run_id_from_label, session_id_from_label
from ...storage.base import Storage
from ...storage.layout import run_key
from ...training.spec import SPEC
from ...training.status import STATUS, read_status
from ..money import CostLedger
from ..money import CHARGES_WINDOW_S, our_charge, cap_charges
from ..money import is_run_id
from ..home import REBUILD_KEY, StateStore

REBUILT_KEY = "state:rebuilt"  # {"set_aside", "why", "at", "rebuilt_at"} of the last rebuild

Charges = Callable[[float, float], Awaitable[Any]]  # the provider's checked /charges/ report (guard.provider_charges)


def _run_age(storage: Storage, run_id: str) -> float | None:
    """Seconds the run has been going, on the bucket's clock: from its spec's write to its last
    status write; None when the bucket cannot tell (no such run, an ended one, unreadable)."""
    if not is_run_id(run_id):
        return None
    try:
        status = read_status(storage, run_id)
        if status is None or status.state.is_terminal:
            return None
        launched = storage.stat(run_key(run_id, SPEC)).updated
        reported = storage.stat(run_key(run_id, STATUS)).updated
    except (LoraCloudError, ValueError):
        return None
    if launched is None or reported is None or reported < launched:
        return None
    return reported - launched


def first_sightings(storage: Storage, instances: list[Instance], now: float,
                    remembered: Mapping[str, float]) -> dict[str, tuple[Instance, float]]:
    """Instance id -> (instance, when it is taken to have been first seen), blocking."""
    out: dict[str, tuple[Instance, float]] = {}
    for inst in instances:
        iid = str(inst.id)
        at = min(now, remembered.get(iid, now))
        age = _run_age(storage, inst.run_id) if inst.run_id and not inst.session_id else None
        if age is not None:
            at = min(at, now - age)
        out[iid] = (inst, at)
    return out


def _billed_instance(row: dict[str, Any]) -> str:
    """The instance a ``/charges/`` row bills (``source: "instance-<id>"``), "" for other rows."""
    src = str(row.get("source") or "")
    return src[len("instance-"):] if src.startswith("instance-") else ""


def billed_gone(rows: list[dict[str, Any]], listed: set[str], now: float) -> dict[str, tuple[Instance, float]]:
    """Our instances that ``/charges/`` billed and the listing no longer shows, as destroyed
    instances (id -> (instance, the start of its first row))."""
    out: dict[str, tuple[Instance, float]] = {}
    for row in rows:
        iid = _billed_instance(row)
        if not iid or iid in listed or not our_charge(row, listed):
            continue
        meta = row.get("metadata")
        label = str(meta.get("label") or "") if isinstance(meta, dict) else ""
        start = row.get("start")
        at = float(start) if isinstance(start, (int, float)) and not isinstance(start, bool) \
            and math.isfinite(start) and start <= now else now
        inst = Instance(id=iid, label=label, run_id=run_id_from_label(label), session_id=session_id_from_label(label),
                        state=InstanceState.DESTROYED)
        out[iid] = (inst, min(at, out.get(iid, (inst, at))[1]))
    return out


def book_gone(state: StateStore, rows: list[dict[str, Any]], gone: dict[str, tuple[Instance, float]], now: float,
              max_dph: float) -> None:
    """Book what ``/charges/`` billed the instances gone before the damage into the new ledger,
    each row held to what max_dph allows (their rate is unknown): a lower bound when the answer
    was cut short, and the watchdog's later bookings add only the difference."""
    mine = [r for r in rows if _billed_instance(r) in gone]
    capped, _ = cap_charges(mine, {}, now=now, since=now - CHARGES_WINDOW_S, fallback_dph=max_dph)
    CostLedger(state, lambda: now).reconcile_charges(capped, {iid: inst.run_id for iid, (inst, _) in gone.items()},
                                                     now)


async def rebuild(state: StateStore, storage: Storage, instances: list[Instance], now: float,
                  remembered: Mapping[str, float], charges: Charges | None = None, max_dph: float = 0.0) -> str:
    """Fill ``state`` from the bucket, ``instances`` (one complete listing) and the provider's
    ``charges``; returns what was done, for the guard's report."""
    note: dict[str, Any] = await asyncio.to_thread(state.rebuild_due) or {}
    seen = await asyncio.to_thread(first_sightings, storage, instances, now, remembered)
    gone: dict[str, tuple[Instance, float]] = {}
    billed = "the provider's charges could not be read, so the spend of instances gone before the damage is not known"
    if charges is not None:
        try:
            report = await charges(now - CHARGES_WINDOW_S, now)
        except LoraCloudError:
            pass
        else:
            gone = billed_gone(list(report.rows), set(seen), now)
            billed = (f"{len(gone)} instance(s) gone before the damage are booked from the provider's charges"
                      + ("" if report.complete else " (as much of them as could be read: a lower bound)"))
    await asyncio.to_thread(state.seed_sightings, {**gone, **seen})
    if gone:
        await asyncio.to_thread(book_gone, state, list(report.rows), gone, now, max_dph)
    dated = sum(1 for iid, (_, at) in seen.items() if at < min(now, remembered.get(iid, now)))
    await asyncio.to_thread(state.set_kv, REBUILD_KEY, "")
    # kept for whoever looks into the store later: which damaged file it replaces, and when
    await asyncio.to_thread(state.set_kv, REBUILT_KEY, json.dumps({**note, "rebuilt_at": now}))
    return (f"the state store was damaged ({note.get('why', 'unknown')}): set aside as "
            f"{note.get('set_aside', '?')} (kept, not deleted) and a new one rebuilt from the provider's listing "
            f"({len(instances)} instance(s)) and the bucket ({dated} dated by their run's records there); {billed}")
