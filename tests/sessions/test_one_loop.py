"""ComfyUI's process runs one background loop of the pack's: the guard, the event poller and the
sessions' SSH tunnels all live on it, whichever loop asks for a tunnel (a route on the server loop,
a node on its prompt's loop).

The pack is installed as ComfyUI installs it (``routes.install()`` with stand-ins for ComfyUI's
``server`` and ``folder_paths``, the members the pack uses), then a session is rented on the real
stack of conftest.py (the fake vast.ai, the real sshd, the GCS emulator) and its tunnel opened.
The loops are counted from the process's loop objects, so a loop the package starts anywhere is
seen, whatever its thread is called.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import types
import urllib.request

from aiohttp import web

from comfy_lora_cloud.comfy import routes as routes_mod
from comfy_lora_cloud.comfy import wiring
from comfy_lora_cloud.service.events import INSTANCE_EVENT
from comfy_lora_cloud.service.loop import Loop
from comfy_lora_cloud.service.sessions import SessionRequest

from .conftest import wait_for


def pack_loop_threads() -> list[threading.Thread]:
    """The threads that run an asyncio loop and that the package's code started (the thread's
    target is a function of comfy_lora_cloud), the test's own left out. Every loop of the process
    is found by the garbage collector, and a running one knows its thread; a thread's stack would
    not do, as a coroutine's frames do not always lead back to the loop that runs them."""
    threads = {t.ident: t for t in threading.enumerate() if t is not threading.current_thread()}
    found = []
    for obj in gc.get_objects():
        if issubclass(type(obj), asyncio.AbstractEventLoop) and obj.is_running():
            thread = threads.get(getattr(obj, "_thread_id", None))
            target = getattr(thread, "_target", None)
            if thread is not None and getattr(target, "__module__", "").startswith("comfy_lora_cloud."):
                found.append(thread)
    return found


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read()


def started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """The package's loop threads that were not running at ``before`` (an app an earlier test
    built, with a loop of its own, is not ComfyUI's)."""
    return [t for t in pack_loop_threads() if t not in before]


def test_the_counter_sees_every_loop_the_package_starts():
    """The count below could fail: two of the package's loops are two."""
    before = set(pack_loop_threads())
    first, second = Loop("first"), Loop("second")
    try:
        first.start()
        second.start()
        assert set(started_since(before)) == {first.thread, second.thread}
    finally:
        first.stop()
        second.stop()
    assert started_since(before) == []


def test_comfyui_runs_one_background_loop_for_guard_pollers_and_tunnels(stack, tmp_path, monkeypatch):
    for key, value in stack.env.items():
        if key.startswith("LORA_CLOUD_") or key == "STORAGE_EMULATOR_HOST":
            monkeypatch.setenv(key, value)
    sent: list[tuple[str, dict]] = []

    class PromptServer:
        instance = None

        def __init__(self):
            self.routes = web.RouteTableDef()

        def send_sync(self, event, data, sid=None):
            sent.append((event, data))

    PromptServer.instance = PromptServer()
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=PromptServer))
    monkeypatch.setitem(sys.modules, "folder_paths", types.SimpleNamespace(
        get_folder_paths=lambda name: [str(tmp_path / "comfy" / "models" / name)]))
    monkeypatch.setattr(routes_mod, "_installed", False)
    monkeypatch.setattr(wiring.holder, "_app", None)  # this test's home, not an earlier test's
    before = set(pack_loop_threads())
    try:
        assert routes_mod.install() is True  # the routes, and the poller and guard on the pack's loop
        app = wiring.holder.get_blocking()
        assert app.loop is wiring.loop
        [loop_thread] = started_since(before)
        assert loop_thread is wiring.loop.thread

        # a session rented and its tunnel opened from another loop, as a route does on the server's
        async def rent_and_open() -> tuple[dict, object]:
            await app.sessions.start(SessionRequest(idle_minutes=5))
            view = await app.sessions.wait_ready(poll_s=0.05, timeout=120)
            return view, await app.sessions.tunnel()

        view, tunnel = asyncio.run(rent_and_open())
        assert view.live and tunnel.alive
        assert b"queue_running" in fetch(f"{tunnel.url}/queue")  # the remote ComfyUI, through the tunnel
        # the poller ran on that loop too: the sidebar heard of the session's instance
        wait_for(lambda: any(e == INSTANCE_EVENT and d["instances"] for e, d in sent), what="an instance event")

        async def tunnel_loop():
            return tunnel._supervisor.get_loop()  # the task that keeps the tunnel up, reconnecting

        assert wiring.loop.run_blocking(tunnel_loop()) is wiring.loop.start()
        assert started_since(before) == [loop_thread]

        # a dropped link reconnects on that same loop, and the URL handed out stays valid
        async def drop() -> None:
            tunnel.drop()

        wiring.loop.run_blocking(drop())
        wait_for(lambda: tunnel.reconnects >= 1 and tunnel.state == "up", what="the tunnel to reconnect")
        assert b"queue_running" in fetch(f"{tunnel.url}/queue")
        assert started_since(before) == [loop_thread]

        asyncio.run(app.sessions.stop())
        assert not stack.live_instances()
    finally:
        wiring.loop.stop()
    assert started_since(before) == []
