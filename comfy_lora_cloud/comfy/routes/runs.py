"""Routes for training runs and their config. Added by :func:`register`, called from
:func:`~.register_routes`, behind the same HTTP guard.

- ``GET  /runs?limit=&offset=``   a page of runs, newest first
- ``GET  /runs/{run_id}``         one run; ``POST /runs/{run_id}/stop`` (token)
- ``GET  /runs/{run_id}/events?since=``  its events after a sequence number
- ``GET  /runs/{run_id}/samples``, ``/samples/{file}``  its sample images (typed by their bytes)
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

from ...errors import ConfigError
from ...models import check_number
from ...service.runs import REQUEST_RANGES, TrainRequest, editor_overrides
from . import http_guard
from .answers import Guarded, file_response, int_param


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


def register(r: Guarded) -> None:
    @r.get("/runs")
    async def runs(request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 50)
        if not 1 <= limit <= 500:
            raise ConfigError("limit must be between 1 and 500")
        return web.json_response((await (await r.app()).runs.listing(limit, int_param(request, "offset", 0))).to_dict())

    @r.get("/runs/{run_id}")
    async def run(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).runs.get(request.match_info["run_id"])).to_dict())

    @r.mutate("POST", "/runs/{run_id}/stop")
    async def stop_run(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).runs.stop(request.match_info["run_id"])).to_dict())

    @r.get("/runs/{run_id}/events")
    async def run_events(request: web.Request) -> web.Response:
        since = int_param(request, "since", 0)
        return web.json_response((await (await r.app()).runs.events(request.match_info["run_id"], since)).to_dict())

    @r.get("/runs/{run_id}/samples")
    async def run_samples(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).runs.sample_listing(request.match_info["run_id"])).to_dict())

    @r.get("/runs/{run_id}/samples/{file}")
    async def run_sample(request: web.Request) -> web.Response:
        f = await (await r.app()).runs.sample(request.match_info["run_id"], request.match_info["file"])
        return file_response(f, "private, max-age=60")

    @r.get("/train/presets")
    async def presets(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).train_config.presets()).to_dict())

    @r.mutate("POST", "/train/check")
    async def check(request: web.Request) -> web.Response:
        body = await http_guard.read_json_body(request)
        return web.json_response((await (await r.app()).train_config.check(body)).to_dict())

    @r.mutate("POST", "/runs")
    async def start_run(request: web.Request) -> web.Response:
        req = train_request(await http_guard.read_json_body(request))
        return web.json_response((await (await r.app()).runs.start(req)).to_dict())

    @r.get("/runs/{run_id}/config")
    async def run_config(request: web.Request) -> web.Response:
        config = await (await r.app()).train_config.run_config(request.match_info["run_id"])
        return web.json_response(config.to_dict())
