"""Routes for the config editor and run comparison. Added by :func:`register`, called from
:func:`~.routes.register_routes`, behind the same HTTP guard.

- ``GET  /train/presets``         the three presets and the editor's fields and limits
- ``POST /train/check``           ``{dataset, lora_type, config: {rank, learning_rate, steps,
  resolution}, trigger, gpu}`` -> errors by field, resolved values, plan, estimate ($ and hours)
- ``GET  /runs/{run_id}/config``  a run's resolved config, flat, for comparing runs
- ``POST /runs``                  the quick launch: a body parsed by :func:`train_request`, then
  the same start as the Launch node and ``train start``
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ConfigError
from ..models import check_number
from ..service.runs import REQUEST_RANGES, TrainRequest, editor_overrides
from . import http_guard
from .answers import PREFIX


def train_request(body: Any) -> TrainRequest:
    """The sidebar's quick launch body as the typed request the Launch node and ``train start``
    build, checked strictly: known keys only, strings where strings go, real booleans and finite
    numbers. Parsed here, at the edge, so the service only ever sees a :class:`TrainRequest`."""
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object")
    allowed = {"dataset", "lora_type", "lora_name", "trigger", "gpu", "provider", "interruptible",
               "max_run_usd", "max_dph", "max_hours", "config"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(allowed))}")
    out: dict[str, Any] = {}
    for key in ("dataset", "lora_type", "lora_name", "trigger", "gpu", "provider"):
        value = body.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string")
        out[key] = value
    if "interruptible" in body:
        if not isinstance(body["interruptible"], bool):
            raise ConfigError("interruptible must be true or false")
        out["interruptible"] = body["interruptible"]
    for key in ("max_run_usd", "max_dph", "max_hours"):  # a body has no 'off': above 0
        value = body.get(key)
        if value is None:
            continue
        low, high = REQUEST_RANGES[key]
        out[key] = float(check_number(key, value, low, high, above=low == 0))
    if body.get("config") is not None:  # the sidebar's config editor: rank, learning rate, steps...
        if not isinstance(body["config"], dict):
            raise ConfigError("config must be an object")
        overrides, errors = editor_overrides(body["config"])
        if errors:
            raise ConfigError("; ".join(f"{e.field}: {e.message}" for e in errors))
        out["overrides"] = overrides
    if "dataset" not in out:
        raise ConfigError("dataset is required")
    if out.get("gpu") == "auto":
        del out["gpu"]
    return TrainRequest(**out).checked()


def register(routes: web.RouteTableDef, r: Any) -> None:
    def get(path: str):
        return lambda fn: routes.get(PREFIX + path)(r.wrap(fn, mutating=False))

    def mutate(method: str, path: str):
        return lambda fn: routes.route(method, PREFIX + path)(r.wrap(fn, mutating=True))

    @get("/train/presets")
    async def presets(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).train_config.presets()).to_dict())

    @mutate("POST", "/train/check")
    async def check(request: web.Request) -> web.Response:
        body = await http_guard.read_json_body(request)
        return web.json_response((await (await r.app()).train_config.check(body)).to_dict())

    @mutate("POST", "/runs")
    async def start_run(request: web.Request) -> web.Response:
        req = train_request(await http_guard.read_json_body(request))
        return web.json_response((await (await r.app()).runs.start(req)).to_dict())

    @get("/runs/{run_id}/config")
    async def run_config(request: web.Request) -> web.Response:
        config = await (await r.app()).train_config.run_config(request.match_info["run_id"])
        return web.json_response(config.to_dict())
