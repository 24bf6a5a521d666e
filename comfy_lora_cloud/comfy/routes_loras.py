"""Routes for trying a LoRA and for the workflow templates (under ``/lora_cloud/api/``).

Registered by :func:`~.routes.register_routes` behind the same guard as every route; queueing a
test is a mutating route (JSON, token): it makes a ComfyUI spend GPU time. Images are only those
of tests this app queued, fetched from that ComfyUI's ``/view`` and typed by their bytes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ConfigError
from . import http_guard
from .answers import PREFIX


def register(routes: web.RouteTableDef, r: Any) -> None:
    """Add the routes to ``routes``, each behind ``r``'s guard (``r``: :func:`~.routes.register_routes`'
    handler state; ``await r.app()`` is the app)."""

    def get(path: str):
        return lambda fn: routes.get(PREFIX + path)(r.wrap(fn, mutating=False))

    def mutate(method: str, path: str):
        return lambda fn: routes.route(method, PREFIX + path)(r.wrap(fn, mutating=True))

    @get("/templates")
    async def templates(request: web.Request) -> web.Response:
        return web.json_response({"templates": [t.to_dict() for t in (await r.app()).templates.describe()]})

    @get("/loras/{name}/test")
    async def lora_test_defaults(request: web.Request) -> web.Response:
        svc = (await r.app()).templates
        name = request.match_info["name"]
        return web.json_response({"lora": name, "prompt": await svc.default_prompt_for(name),
                                  "target": await svc.target()})

    @mutate("POST", "/loras/{name}/test")
    async def lora_test(request: web.Request) -> web.Response:
        body = await http_guard.read_json_body(request)
        prompt, compare, client_id = body.get("prompt"), body.get("compare", False), body.get("client_id")
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigError("prompt must be text")
        if not isinstance(compare, bool):
            raise ConfigError("compare must be true or false")
        if client_id is not None and (not isinstance(client_id, str) or len(client_id) > 200):
            raise ConfigError("client_id must be a short string")
        test = await (await r.app()).templates.test_lora(request.match_info["name"], prompt=prompt, compare=compare,
                                                        client_id=client_id)
        return web.json_response(test.to_dict())

    @get("/lora_tests/{prompt_id}")
    async def lora_test_status(request: web.Request) -> web.Response:
        status = await (await r.app()).templates.test_status(request.match_info["prompt_id"])
        return web.json_response(status.to_dict())

    @get("/lora_tests/{prompt_id}/images/{index}")
    async def lora_test_image(request: web.Request) -> web.Response:
        raw = request.match_info["index"]
        if not raw.isdigit() or len(raw) > 4:
            raise ConfigError("the image index must be a small number")
        f = await (await r.app()).templates.test_image(request.match_info["prompt_id"], int(raw))
        return web.Response(body=f.body, content_type=f.content_type,
                            headers={**f.headers, "Cache-Control": "private, max-age=300"})
