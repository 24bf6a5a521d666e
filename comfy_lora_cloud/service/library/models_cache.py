"""``lora-cloud models cache``: the base weights (flux, ae, clip_l, t5xxl) into the bucket's
``models/`` once, so no run downloads ~30 GB from Hugging Face on a paid GPU. The one home of
that (reached as ``app.models``); the rules (file names, one file on disk at a time) are
:func:`comfy_lora_cloud.training.weights.cache_weights`, which the trainer shares.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable, TYPE_CHECKING

from ...errors import ConfigError
from ...storage.layout import model_key
from ...training.kohya_config import MODEL_FILES
from ...training.weights import cache_weights, missing_weights
from .views import ModelsStatus, WeightFile

if TYPE_CHECKING:
    from ..core import Core


class ModelsCache:
    def __init__(self, core: Core, hub: Callable[[str | None], Any] | None = None):
        self.core = core
        self.hub = hub  # token -> WeightSource; default: service.hub.HttpHub

    def _source(self) -> Any:
        token = self.core.settings.secret("hf_token")
        if not token:
            return None
        if self.hub is not None:
            return self.hub(token)
        from .hub import HttpHub

        return HttpHub(token)

    async def status(self) -> ModelsStatus:
        """Which base-weights files ``models/`` holds."""
        def run() -> ModelsStatus:
            storage = self.core.storage
            missing = {f for f, _ in missing_weights(storage)}
            files = tuple(WeightFile(file=f, repo=repo, cached=f not in missing, key=model_key(f))
                          for f, repo in MODEL_FILES.values())
            return ModelsStatus(storage=storage.url, files=files, complete=not missing)

        return await asyncio.to_thread(run)

    async def cache(self, *, local_dirs: list[Path] | None = None, work_dir: Path | None = None,
                    on_file: Callable[[str, str], None] | None = None) -> ModelsStatus:
        """Upload what ``models/`` lacks: from ``local_dirs`` when a file is there, else from
        Hugging Face (needs ``hf_token`` and the accepted FLUX.1-dev licence)."""
        dirs = [Path(d).expanduser() for d in (local_dirs or [])]
        for d in dirs:
            if not d.is_dir():
                raise ConfigError(f"--from {d}: not a folder")

        def run() -> dict[str, str]:
            storage = self.core.storage
            if work_dir is not None:
                Path(work_dir).expanduser().mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="lora-cloud-weights-",
                                             dir=str(work_dir) if work_dir else None) as tmp:
                return cache_weights(storage, self._source(), Path(tmp), local_dirs=dirs, on_file=on_file)

        done = await asyncio.to_thread(run)
        return dataclasses.replace(await self.status(), cached_from=done)
