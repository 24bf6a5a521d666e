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

Runs themselves are not copied into the store: the bucket stays their witness (a live status
keeps an instance owned), and a row copied from another controller's run would make this one
end that run when its instance moves. Who owns an instance is then judged as usual: an orphan
with no run anywhere is destroyed after the grace period, a run live in the bucket is kept.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping

from ..errors import LoraCloudError
from ..models import Instance
from ..storage.base import Storage
from ..storage.layout import run_key
from ..training.spec import SPEC
from ..training.status import STATUS, read_status
from .ownership import is_run_id
from .state import REBUILD_KEY, StateStore


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


async def rebuild(state: StateStore, storage: Storage, instances: list[Instance], now: float,
                  remembered: Mapping[str, float]) -> str:
    """Fill ``state`` from the bucket and ``instances`` (one complete listing); returns what was
    done, for the guard's report."""
    note: dict[str, Any] = await asyncio.to_thread(state.rebuild_due) or {}
    seen = await asyncio.to_thread(first_sightings, storage, instances, now, remembered)
    await asyncio.to_thread(state.seed_sightings, seen)
    dated = sum(1 for iid, (_, at) in seen.items() if at < min(now, remembered.get(iid, now)))
    await asyncio.to_thread(state.set_kv, REBUILD_KEY, "")
    await asyncio.to_thread(state.set_kv, "state:rebuilt", json.dumps({**note, "rebuilt_at": now}))
    return (f"the state store was damaged ({note.get('why', 'unknown')}): set aside as "
            f"{note.get('set_aside', '?')} (kept, not deleted) and a new one rebuilt from the provider's listing "
            f"({len(instances)} instance(s)) and the bucket ({dated} dated by their run's records there); the "
            "listed instances' spend is booked again from the provider's charges, the spend of instances gone "
            "before the damage is not")
