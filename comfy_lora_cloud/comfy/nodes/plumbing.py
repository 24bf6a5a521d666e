"""What every node shares with ComfyUI: the pack's app and its parts, ComfyUI's progress bar and
its Cancel button as plain callables, and the check of a combo's value. Apart from the node modules so each imports this and none
imports another; ComfyUI's own modules are imported when a node runs, never here."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ...errors import ConfigError
from ...service import graph
from ...service.app import App
from ..wiring import holder

CATEGORY = "LoRA Cloud"
LORA_TYPES = ["character", "style", "concept"]


def check_choice(value: str, options: list[str], what: str) -> str:
    if value not in options:  # V3 combos are not validated by ComfyUI itself
        raise ConfigError(f"{what} must be one of {', '.join(options)}, not {value!r}")
    return value


async def app_parts() -> tuple[App, Any, graph.WorkArea]:
    """The pack's app, its storage and the work folder (reading settings or opening a GCS client
    may block: done in a thread)."""
    def parts() -> tuple[App, Any, graph.WorkArea]:
        app = holder.get_blocking()
        return app, app.storage, graph.WorkArea(app.work_dir)

    return await asyncio.to_thread(parts)


def progress_bar(node_id: str | None) -> Callable[[int, int], None]:
    """A (done, total) callback on ComfyUI's progress bar; each update is also an interruption
    point (ProgressBar.update raises when the user pressed Cancel)."""
    import comfy.utils

    bars: dict[int, Any] = {}

    def update(done: int, total: int) -> None:
        if total <= 0:
            return
        bar = bars.get(total) or bars.setdefault(total, comfy.utils.ProgressBar(total, node_id=node_id))
        bar.update_absolute(done, total)

    return update


def interrupted() -> bool:
    """Raises ComfyUI's InterruptProcessingException once the user pressed Cancel."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()
    return False
