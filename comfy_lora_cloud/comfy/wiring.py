"""The one :class:`App` of a ComfyUI process, shared by the nodes, the routes and the pack's loop.

Built on first use in a worker thread (reading settings and opening a GCS client may block), with
ComfyUI's websocket as the event sink and ComfyUI's ``models/loras/lora_cloud`` as the LoRA
folder. The app holds no loop-bound object, so the server loop, each prompt's loop and the pack's
own loop all use the same one, and so the same settings, storage and guard.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

from ..service.app import App
from ..service.library import comfy_lora_folder


class AppHolder:
    """Builds the app once, on first use; ``get()`` for coroutines, ``get_blocking()`` for threads."""

    def __init__(self, build: Callable[[], App]):
        self._build = build
        self._app: App | None = None
        self._lock = threading.Lock()

    def get_blocking(self) -> App:
        with self._lock:
            if self._app is None:
                self._app = self._build()
            return self._app

    async def get(self) -> App:
        return self._app or await asyncio.to_thread(self.get_blocking)


def _comfy_app() -> App:
    import folder_paths  # ComfyUI's module

    from .events import comfy_send

    from ..service import offload

    app = App.open(emit=comfy_send, loras_dir=comfy_lora_folder(folder_paths.get_folder_paths("loras")[0]))
    offload.enable(home=app.settings.home)  # heavy transfers and preparation: never on the server's GIL
    return app


holder = AppHolder(_comfy_app)
