"""Routes for the workflow templates (Generate's list, and one as the canvas loads it). Added by
:func:`register`, called from :func:`~.register_routes`, behind the same HTTP guard.

- ``GET  /templates``          every template: name, title, what it needs
- ``GET  /templates/{name}``   a template as ComfyUI's canvas loads it
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .answers import Guarded


def register(r: Guarded) -> None:
    @r.get("/templates")
    async def templates(request: web.Request) -> web.Response:
        return web.json_response({"templates": [t.to_dict() for t in (await r.app()).templates.describe()]})

    @r.get("/templates/{name}")
    async def template(request: web.Request) -> web.Response:
        templates = (await r.app()).templates
        return web.json_response(await asyncio.to_thread(templates.ui, request.match_info["name"]))
