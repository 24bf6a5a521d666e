"""Mirror a local folder and a storage prefix (``lora-cloud sync push|pull``): plan by size and
checksum, then apply with the sync engine's parallel transfers (in a worker process when
the app runs in ComfyUI: the app's :class:`~.offload.Offload`). The refusal of dangerous
``--delete`` prefixes lives in the sync engine itself, so no edge can skip it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, TYPE_CHECKING

from ...storage import sync as engine
from ...storage.base import clean_prefix

if TYPE_CHECKING:
    from ..core import Core
    from .control import Library
    from .offload import Offload


def normalise_prefix(prefix: str) -> str:
    """``datasets/cat`` -> ``datasets/cat/``; ``""`` stays ``""`` (the whole bucket)."""
    p = prefix.strip().lstrip("/")
    p = p if p.endswith("/") or not p else p + "/"
    return clean_prefix(p)


class Mirror:
    def __init__(self, core: Core, library: Library, offload: Offload):
        self.core = core
        self.library = library
        self.offload = offload

    async def plan_push(self, local: Path, prefix: str, *, delete: bool = False) -> engine.SyncPlan:
        cache = self.library.hash_cache()
        return await asyncio.to_thread(self.offload.plan_push, self.core.storage, local, normalise_prefix(prefix),
                                       delete=delete, cache=cache)

    async def plan_pull(self, prefix: str, local: Path, *, delete: bool = False) -> engine.SyncPlan:
        cache = self.library.hash_cache()
        return await asyncio.to_thread(self.offload.plan_pull, self.core.storage, normalise_prefix(prefix), local,
                                       delete=delete, cache=cache)

    async def apply(self, plan: engine.SyncPlan, progress: Callable[[Any], None] | None = None) -> engine.SyncResult:
        cache = self.library.hash_cache()
        return await asyncio.to_thread(self.offload.apply, plan, self.core.storage, workers=self.core.settings.sync_workers,
                                       progress=progress, cache=cache)
