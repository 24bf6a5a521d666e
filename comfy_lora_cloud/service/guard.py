"""One guard pass: reconcile (destroy labelled instances no live run owns, mark vanished runs)
then the budget watchdog (book costs, reconcile them with the provider's charges, enforce the
budgets). ComfyUI's pack loop runs it every 30 s; ``lora-cloud instances reconcile`` runs it once.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import StorageError
from ..models import RunState
from ..providers.base import Provider
from ..storage import Storage
from ..training.status import read_status
from .budgets import Budgets
from .reconcile import Reconciler
from .state import StateStore
from .watchdog import Emit, Watchdog


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
        """True when the run's trainer reported a live state within ``fresh_s`` seconds: another
        controller (a second laptop) owns it. An unreadable bucket counts as live: never destroy
        on doubt."""
        import asyncio

        from ..errors import ConfigError

        try:
            status = await asyncio.to_thread(read_status, self.storage, run_id)
        except ConfigError:
            return False  # not a run id this pack could have made
        except StorageError:
            return True
        return status is not None and not status.state.is_terminal and self.clock() - status.updated_at < self.fresh_s

    async def run_once(self) -> dict[str, Any]:
        report = await self.reconciler.run_once()
        verdicts = await self.watchdog.poll_once()
        return {"reconcile": report.to_dict(),
                "budgets": [{"level": v.level, "message": v.message} for v in verdicts]}


def _reported_state(storage: Storage, run_id: str) -> RunState | None:
    try:
        status = read_status(storage, run_id)
    except StorageError:
        return None
    return status.state if status is not None else None
