"""What a dataset transfer needs from whoever runs the sync engine: plan a push, plan a pull,
apply a plan. :class:`~.offload.Offload` is the app's (in a worker process from ComfyUI, here
otherwise); :data:`IN_PROCESS` runs the engine in this process (a command, a worker itself).

A protocol of its own, so the dataset transfers (:mod:`.datasets`) take one without importing
:mod:`.offload`: the worker process runs a dataset preparation, which uploads a dataset, and
that must not import back the module that started the worker.
"""

from __future__ import annotations

import os
from typing import Protocol

from ...storage import Storage, sync


class Transfers(Protocol):
    def plan_push(self, storage: Storage, local_dir: str | os.PathLike[str], prefix: str, *, delete: bool = False,
                  cache: sync.HashCache | None = None) -> sync.SyncPlan: ...

    def plan_pull(self, storage: Storage, prefix: str, local_dir: str | os.PathLike[str], *, delete: bool = False,
                  cache: sync.HashCache | None = None) -> sync.SyncPlan: ...

    def apply(self, plan: sync.SyncPlan, storage: Storage, *, workers: int = 8,
              progress: sync.ProgressFn | None = None, cache: sync.HashCache | None = None) -> sync.SyncResult: ...


class InProcess:
    """The sync engine, in this process."""

    def plan_push(self, storage: Storage, local_dir: str | os.PathLike[str], prefix: str, *, delete: bool = False,
                  cache: sync.HashCache | None = None) -> sync.SyncPlan:
        return sync.plan_push(storage, local_dir, prefix, delete=delete, cache=cache)

    def plan_pull(self, storage: Storage, prefix: str, local_dir: str | os.PathLike[str], *, delete: bool = False,
                  cache: sync.HashCache | None = None) -> sync.SyncPlan:
        return sync.plan_pull(storage, prefix, local_dir, delete=delete, cache=cache)

    def apply(self, plan: sync.SyncPlan, storage: Storage, *, workers: int = 8,
              progress: sync.ProgressFn | None = None, cache: sync.HashCache | None = None) -> sync.SyncResult:
        return sync.apply(plan, storage, workers=workers, progress=progress, cache=cache)


IN_PROCESS: Transfers = InProcess()
