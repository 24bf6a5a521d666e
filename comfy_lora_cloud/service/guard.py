"""One guard pass: reconcile (destroy labelled instances no live run owns, mark vanished runs)
then the budget watchdog (book costs, reconcile them with the provider's charges, enforce the
budgets). ComfyUI's pack loop runs it every 30 s; ``lora-cloud instances reconcile`` runs it once.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

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
                 clock: Callable[[], float] = time.time, emit: Emit | None = None, grace_s: float = 120.0,
                 is_live_elsewhere: Callable[[str], Awaitable[bool]] | None = None,
                 storage: Storage | None = None):
        kwargs: dict[str, Any] = {"is_live_elsewhere": is_live_elsewhere} if is_live_elsewhere else {}
        if storage is not None:
            kwargs["reported_state"] = lambda run_id: _reported_state(storage, run_id)
        self.reconciler = Reconciler(provider, state, clock=clock, grace_s=grace_s, **kwargs)
        self.watchdog = Watchdog(provider, state, budgets, clock=clock, emit=emit,
                                 charges=provider_charges(provider))

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
