"""The sidebar's Generate section: routes under ``/lora_cloud/api/`` for remote ComfyUI sessions
and their outputs in the bucket. Added by :func:`~.register_routes` with the same guard as every
route (Host/Origin, body limits; JSON and the token for what spends money or opens a connection).

    GET  /sessions                 {"current": view or null, "sessions": [views]}
    POST /sessions                 start one (the cheapest fitting offer); readiness follows as
                                   lora_cloud.session events
    POST /sessions/{id}/stop       destroy its instance
    POST /sessions/{id}/open       {"url"}: this ComfyUI's tunnel to the session's ComfyUI
    GET  /outputs                  the newest images in outputs/, with problems
    GET  /outputs/{session}/{file} one of them (typed by its bytes)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

from aiohttp import web

from ...errors import ConfigError, LoraCloudError
from ...models import check_number
from ...service.sessions import REQUEST_RANGES, SessionRequest
from . import http_guard
from .answers import Guarded, file_response, int_param

log = logging.getLogger(__name__)
_background: set[asyncio.Task[Any]] = set()
_REQUEST_FIELDS = ("gpu", "vram_gb", "idle_minutes", "max_hours", "precision")  # a SessionRequest's


def session_request(body: Any) -> SessionRequest:
    """A session request from the sidebar's JSON body, checked strictly: an unknown field, a
    number as text or out of range is a clear 400, never a default that rents something else."""
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(_REQUEST_FIELDS))
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(sorted(_REQUEST_FIELDS))}")
    out: dict[str, Any] = {}
    for key in ("gpu", "precision"):
        value = body.get(key)
        if value in (None, "", "auto"):
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string")
        out[key] = value
    for key in ("vram_gb", "idle_minutes", "max_hours"):
        value = body.get(key)
        if value is None:
            continue
        out[key] = float(check_number(key, value, *REQUEST_RANGES[key], above=True))
    return SessionRequest(**out).checked()


def register(r: Guarded) -> None:
    @r.get("/sessions")
    async def sessions(request: web.Request) -> web.Response:
        svc = (await r.app()).sessions
        current = await svc.current()
        return web.json_response({"current": current.to_dict() if current is not None else None,
                                  "sessions": [v.to_dict() for v in await svc.list(limit=10)]})

    @r.mutate("POST", "/sessions")
    async def start(request: web.Request) -> web.Response:
        app = await r.app()
        started = await app.sessions.start(session_request(await http_guard.read_json_body(request)))
        view = started.view
        if view.live and view.state != "ready":
            _in_background(app.sessions.wait_ready(view.id), f"session {view.id}")
        return web.json_response(started.to_dict())

    @r.mutate("POST", "/sessions/{session_id}/stop")
    async def stop(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).sessions.stop(request.match_info["session_id"])).to_dict())

    @r.mutate("POST", "/sessions/{session_id}/open")
    async def open_(request: web.Request) -> web.Response:
        sid = request.match_info["session_id"]
        return web.json_response({"id": sid, "url": await (await r.app()).sessions.url(sid)})

    @r.get("/outputs")
    async def outputs(request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 60)
        return web.json_response((await (await r.app()).sessions.outputs(max(1, min(limit, 500)))).to_dict())

    @r.get("/outputs/{session_id}/{file}")
    async def output(request: web.Request) -> web.Response:
        f = await (await r.app()).sessions.output(request.match_info["session_id"], request.match_info["file"])
        return file_response(f, "private, max-age=300")


def _in_background(coro: Awaitable[Any], what: str) -> None:
    """Run ``coro`` on this loop after the answer (its outcome arrives as events); keep a reference."""
    async def guarded() -> None:
        try:
            await coro
        except LoraCloudError as exc:
            log.warning("%s: %s", what, exc.message)
        except Exception:  # noqa: BLE001
            log.exception("%s failed", what)

    task = asyncio.get_running_loop().create_task(guarded())
    _background.add(task)
    task.add_done_callback(_background.discard)
