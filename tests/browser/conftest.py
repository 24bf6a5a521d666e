"""A page that stands in for ComfyUI's frontend shell, served with the real routes over a real
App, and Debian's Chromium driven by Playwright.

The server does what ComfyUI's does for a pack: every
route answers at ``/path`` and ``/api/path``, the pack's ``web/`` is served at
``/extensions/comfy_lora_cloud/``, ``/api/extensions`` lists every ``.js`` there, and ``/ws``
carries ``{"type", "data"}`` messages (what ``PromptServer.send_sync`` broadcasts).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import pytest

from aiohttp import WSMsgType, web

from comfy_lora_cloud.comfy.routes import register_routes
from tests.fixtures.prerequisites import missing

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
SHIM = Path(__file__).resolve().parent / "shim"
CHROMIUM = os.environ.get("LORA_CLOUD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class Broadcaster:
    """``send(event, data)`` to every open socket, like ``PromptServer.send_sync(..., sid=None)``."""

    def __init__(self) -> None:
        self.sockets: set[web.WebSocketResponse] = set()
        self.pending: set[asyncio.Task[Any]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once a socket opened

    async def close_all(self, app: web.Application) -> None:
        """aiohttp's on_shutdown: open sockets would otherwise hold the server's teardown."""
        for ws in list(self.sockets):
            await ws.close()

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Thread-safe as ComfyUI's ``send_sync`` is: the guard's watchdog tells a budget crossing
        from a worker thread."""
        loop = self.loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._send(event, data)
        else:
            loop.call_soon_threadsafe(self._send, event, data)

    def _send(self, event: str, data: dict[str, Any]) -> None:
        for ws in list(self.sockets):
            task = asyncio.get_running_loop().create_task(ws.send_json({"type": event, "data": data}))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        self.loop = asyncio.get_running_loop()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "status", "data": {"sid": request.query.get("clientId", "test-client")}})
        self.sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.discard(ws)
        return ws


def build_app(get_app, broadcaster: Broadcaster) -> web.Application:
    routes = web.RouteTableDef()
    register_routes(routes, get_app)
    app = web.Application()
    app.on_shutdown.append(broadcaster.close_all)
    for route in routes:
        if isinstance(route, web.RouteDef):
            app.router.add_route(route.method, route.path, route.handler)
            app.router.add_route(route.method, "/api" + route.path, route.handler)

    async def extensions(request: web.Request) -> web.Response:
        files = sorted(p.relative_to(WEB).as_posix() for p in WEB.rglob("*.js"))
        return web.json_response([f"/extensions/comfy_lora_cloud/{f}" for f in files])

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(SHIM / "index.html")

    app.router.add_get("/", index)
    app.router.add_get("/api/extensions", extensions)
    app.router.add_get("/ws", broadcaster.handler)
    app.router.add_static("/scripts", SHIM / "scripts")
    app.router.add_static("/extensions/comfy_lora_cloud", WEB)
    return app


@pytest.fixture
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        missing(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium); "
                    "the sidebar's browser test cannot run")
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path):
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Sidebar:
    """A page with the sidebar open: its uncaught errors and the requests it sent that change
    something (POSTs, and whatever else :func:`open_sidebar` was told to record)."""

    page: Any
    errors: list[str] = field(default_factory=list)
    posts: list[Any] = field(default_factory=list)

    @property
    def root(self) -> Any:
        return self.page.locator(".lcl-root")


async def open_sidebar(opener, url: str, *, width: int = 1000, height: int = 1200, wait_ms: int = 20_000,
                       record: tuple[str, ...] = ("POST",)) -> Sidebar:
    """Open ``url`` (a :func:`build_app` server) in a new page of ``opener`` (the browser, or a
    context of the test's own) and the LoRA Cloud sidebar in it."""
    page = await opener.new_page()  # a context's new_page takes no viewport: set it before the page loads
    await page.set_viewport_size({"width": width, "height": height})
    sidebar = Sidebar(page)
    page.on("pageerror", lambda exc: sidebar.errors.append(str(exc)))
    page.on("request", lambda req: sidebar.posts.append(req) if req.method in record else None)
    await page.goto(url)
    await page.wait_for_function("window.__shimReady === true", timeout=wait_ms)
    await page.click('button[aria-label^="LoRA Cloud"]')
    return sidebar
