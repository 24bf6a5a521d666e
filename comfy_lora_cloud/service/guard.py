"""One guard pass: reconcile (destroy labelled instances no live run owns, mark vanished runs)
then the budget watchdog (book costs, reconcile them with the provider's charges, enforce the
budgets). ComfyUI's pack loop runs it every 30 s; ``lora-cloud instances reconcile`` runs it once.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import CorruptRecord, StorageError
from ..models import RunState
from ..providers.base import Provider
from ..storage import Storage
from ..training.status import read_status
from .budgets import Budgets
from .reconcile import Reconciler
from .state import StateStore
from .watchdog import Emit, Watchdog


# how far ahead of ours a trainer's clock may be before its status is not believed: bucket content
# is untrusted, and a status dated next year must not keep an instance "live" until then
CLOCK_SKEW_S = 600.0


def provider_charges(provider: Provider):
    """The provider's charges endpoint, when it has one (vast.ai), for reconciling the ledger."""
    return getattr(getattr(provider, "client", None), "charges", None)


class Guard:
    def __init__(self, provider: Provider, state: StateStore, budgets: Budgets | Callable[[], Budgets], *,
                 storage: Storage, clock: Callable[[], float] = time.time, emit: Emit | None = None,
                 grace_s: float = 120.0, fresh_s: float = 1800.0):
        self.storage, self.clock, self.fresh_s = storage, clock, fresh_s
        self.reconciler = Reconciler(provider, state, clock=clock, grace_s=grace_s,
                                     is_live_elsewhere=self.run_live_in_bucket,
                                     reported_state=lambda run_id: _reported_state(storage, run_id))
        self.watchdog = Watchdog(provider, state, budgets, clock=clock, emit=emit,
                                 charges=provider_charges(provider))

    async def run_live_in_bucket(self, run_id: str) -> bool:
        """Whether another controller (a second laptop) owns the run: :func:`run_live_in_bucket`."""
        import asyncio

        return await asyncio.to_thread(run_live_in_bucket, self.storage, run_id, self.clock(), self.fresh_s)

    async def run_once(self) -> dict[str, Any]:
        report = await self.reconciler.run_once()
        verdicts = await self.watchdog.poll_once()
        return {"reconcile": report.to_dict(),
                "budgets": [{"level": v.level, "message": v.message} for v in verdicts]}


def run_live_in_bucket(storage: Storage, run_id: str, now: float, fresh_s: float) -> bool:
    """True when the run's trainer reported a live state within ``fresh_s`` seconds (blocking).

    An unreadable bucket counts as live: never destroy on doubt. A status that is not one
    (corrupt, or dated in the future: bucket content is untrusted) does not, nor does a run id
    this pack could not have made.
    """
    from ..errors import ConfigError

    try:
        status = read_status(storage, run_id)
    except ConfigError:
        return False  # not a run id this pack could have made
    except CorruptRecord:
        return False  # a trainer writes whole objects: garbage is not a live trainer talking
    except StorageError:
        return True
    if status is None or status.state.is_terminal:
        return False
    age = now - status.updated_at
    return -CLOCK_SKEW_S < age < fresh_s  # a time in the future is not "fresh forever"


def _reported_state(storage: Storage, run_id: str) -> RunState | None:
    try:
        status = read_status(storage, run_id)
    except StorageError:
        return None
    return status.state if status is not None else None
