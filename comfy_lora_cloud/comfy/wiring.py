"""The one :class:`App` of a ComfyUI process, shared by the nodes, the routes and the pack's loop,
and that one background loop (:data:`loop`): the guard, the event pollers and every SSH tunnel of
the process run on it.

Built on first use in a worker thread (reading settings and opening a GCS client may block), with
ComfyUI's websocket as the event sink and ComfyUI's ``models/loras/lora_cloud`` as the LoRA
folder (unless the ``comfyui_loras_dir`` setting names another: :attr:`App.loras_dir`). The app
holds nothing bound to the server loop or a prompt's loop (what is loop-bound and long-lived, a
tunnel, lives on the pack's own loop), so they all use the same one, and so the same settings,
storage and guard.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable

from ..service.app import App
from ..service.library import Offload, comfy_lora_folder
from ..service.loop import Loop


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


def _comfy_app(loop: Loop) -> App:
    import folder_paths  # ComfyUI's module

    from ..settings import default_home
    from .events import comfy_send

    home = default_home()
    app = App.open(home, emit=comfy_send, loras_dir=comfy_lora_folder(folder_paths.get_folder_paths("loras")[0]),
                   offload=Offload.in_workers(home),  # heavy transfers and preparation: never on the server's GIL
                   loop=loop)  # the sessions' tunnels share the guard's and the pollers' loop
    app.templates.local_url = own_url()  # a LoRA test from the sidebar queues on this ComfyUI
    return app


def own_url() -> str | None:
    """This ComfyUI's base URL as seen from its own process (loopback when it listens there);
    ``None`` outside ComfyUI."""
    try:
        from comfy.cli_args import args  # ComfyUI's module
    except ImportError:
        return None

    listen = [a.strip() for a in str(getattr(args, "listen", None) or "127.0.0.1").split(",") if a.strip()]
    any_or_loopback = {"0.0.0.0", "::", "127.0.0.1", "localhost", "::1"}
    host = "127.0.0.1" if not listen or any_or_loopback & set(listen) else listen[0]
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if getattr(args, "tls_keyfile", None) and getattr(args, "tls_certfile", None) else "http"
    return f"{scheme}://{host}:{int(getattr(args, 'port', 8188))}"


loop = Loop("lora-cloud-loop")  # the process's one background loop: its thread starts on first use
holder = AppHolder(lambda: _comfy_app(loop))
