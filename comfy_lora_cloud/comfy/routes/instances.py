"""Routes for the money a user is spending now: rented instances, what they cost, the budgets.

- ``GET  /instances?all=1``                  this install's instances (``all``: every one on the account)
- ``POST /instances/{id}/stop``, ``/destroy``  (token; only an instance this install owns)
- ``GET  /instances/{id}/logs?tail=``
- ``GET  /costs``                            spend per period, with the budgets
- ``GET  /budgets``, ``POST /budgets``       the daily/monthly/per-run limits
"""

from __future__ import annotations

from aiohttp import web

from . import http_guard
from .answers import Guarded, int_param


def register(r: Guarded) -> None:
    @r.get("/instances")
    async def instances(request: web.Request) -> web.Response:
        everything = request.query.get("all") in ("1", "true")
        return web.json_response({"instances": [i.to_dict() for i in await (await r.app()).instances.list(everything)]})

    @r.mutate("POST", "/instances/{instance_id}/stop")
    async def stop_instance(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).instances.stop(request.match_info["instance_id"])).to_dict())

    @r.mutate("POST", "/instances/{instance_id}/destroy")
    async def destroy_instance(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).instances.destroy(request.match_info["instance_id"])).to_dict())

    @r.get("/instances/{instance_id}/logs")
    async def instance_logs(request: web.Request) -> web.Response:
        tail = int_param(request, "tail", 200)
        logs = await (await r.app()).instances.logs(request.match_info["instance_id"], tail)
        return web.json_response(logs.to_dict())

    @r.get("/costs")
    async def costs(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).costs.summary()).to_dict())

    @r.get("/budgets")
    async def budgets(request: web.Request) -> web.Response:
        return web.json_response((await r.app()).costs.budgets().to_dict())

    @r.mutate("POST", "/budgets")
    async def set_budgets(request: web.Request) -> web.Response:
        changed = await (await r.app()).costs.set_budgets(await http_guard.read_json_body(request))
        return web.json_response(changed.to_dict())
