"""Routes for the LoRAs in the bucket and for trying one (under ``/lora_cloud/api/``).

- ``GET  /loras?offset=&limit=``        a page of LoRAs, with the problems skipped
- ``GET  /loras/{name}/metadata``       what the LoRA file says about its training
- ``POST /loras/{name}/download``       into ComfyUI's LoRA folder; ``DELETE /loras/{name}``
- ``GET  /loras/{name}/test``           the defaults of a test; ``POST`` queues one
- ``GET  /lora_tests/{prompt_id}``, ``/images/{index}``  a queued test and its images

Registered by :func:`~.register_routes` behind the same guard as every route; queueing a test is
a mutating route (JSON, token): it makes a ComfyUI spend GPU time. Images are only those of tests
this app queued, fetched from that ComfyUI's ``/view`` and typed by their bytes.
"""

from __future__ import annotations

from aiohttp import web

from ...errors import ConfigError
from . import http_guard
from .answers import Guarded, page_params


def register(r: Guarded) -> None:
    @r.get("/loras")
    async def loras(request: web.Request) -> web.Response:
        listing = await (await r.app()).library.lora_listing(*page_params(request))
        return web.json_response(listing.to_dict())

    @r.get("/loras/{name}/metadata")
    async def lora_metadata(request: web.Request) -> web.Response:
        metadata = await (await r.app()).library.lora_metadata(request.match_info["name"])
        return web.json_response(metadata.to_dict())

    @r.mutate("POST", "/loras/{name}/download")
    async def download_lora(request: web.Request) -> web.Response:
        downloaded = await (await r.app()).library.download_lora(request.match_info["name"])
        return web.json_response(downloaded.to_dict())

    @r.mutate("DELETE", "/loras/{name}")
    async def delete_lora(request: web.Request) -> web.Response:
        deleted = await (await r.app()).library.delete_lora(request.match_info["name"])
        return web.json_response(deleted.to_dict())

    # ---- trying a LoRA ---------------------------------------------------------------------------
    @r.get("/loras/{name}/test")
    async def lora_test_defaults(request: web.Request) -> web.Response:
        svc = (await r.app()).templates
        name = request.match_info["name"]
        return web.json_response({"lora": name, "prompt": await svc.default_prompt_for(name),
                                  "target": await svc.target()})

    @r.mutate("POST", "/loras/{name}/test")
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

    @r.get("/lora_tests/{prompt_id}")
    async def lora_test_status(request: web.Request) -> web.Response:
        status = await (await r.app()).templates.test_status(request.match_info["prompt_id"])
        return web.json_response(status.to_dict())

    @r.get("/lora_tests/{prompt_id}/images/{index}")
    async def lora_test_image(request: web.Request) -> web.Response:
        raw = request.match_info["index"]
        if not raw.isdigit() or len(raw) > 4:
            raise ConfigError("the image index must be a small number")
        f = await (await r.app()).templates.test_image(request.match_info["prompt_id"], int(raw))
        return web.Response(body=f.body, content_type=f.content_type,
                            headers={**f.headers, "Cache-Control": "private, max-age=300"})
