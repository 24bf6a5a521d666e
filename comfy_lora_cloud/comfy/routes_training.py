"""Routes for the config editor and run comparison. Added by :func:`register`, called from
:func:`~.routes.register_routes`, behind the same HTTP guard.

- ``GET  /train/presets``         the three presets and the editor's fields and limits
- ``POST /train/check``           ``{dataset, lora_type, config: {rank, learning_rate, steps,
  resolution}, trigger, gpu}`` -> errors by field, resolved values, plan, estimate ($ and hours)
- ``GET  /runs/{run_id}/config``  a run's resolved config, flat, for comparing runs
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import http_guard
from .routes import PREFIX


def register(routes: web.RouteTableDef, r: Any) -> None:
    def get(path: str):
        return lambda fn: routes.get(PREFIX + path)(r.wrap(fn, mutating=False))

    def mutate(method: str, path: str):
        return lambda fn: routes.route(method, PREFIX + path)(r.wrap(fn, mutating=True))

    @get("/train/presets")
    async def presets(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).train_config.presets())

    @mutate("POST", "/train/check")
    async def check(request: web.Request) -> web.Response:
        body = await http_guard.read_json_body(request)
        return web.json_response(await (await r.app()).train_config.check(body))

    @get("/runs/{run_id}/config")
    async def run_config(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).train_config.run_config(request.match_info["run_id"]))
