"""Routes for a new dataset from the sidebar: staged uploads and the preparation review, until it
is published to the bucket. Added by :func:`register`, called from :func:`~.register_routes`, so
each handler sits behind the same HTTP guard.

- ``GET  /uploads/{name}``                    what is staged (resume: send only what is missing)
- ``PUT  /uploads/{name}/files/{file}?sha256=`` one file's bytes (``application/octet-stream``, token)
- ``DELETE /uploads/{name}/files/{file}``, ``DELETE /uploads/{name}``
- ``POST /uploads/{name}/prepare``            ``{lora_type, caption, trigger, resolution}`` -> review
- ``GET  /uploads/{name}/review``
- ``GET  /uploads/{name}/{files|prepared}/{file}``  a staged or prepared image (typed by its bytes)
- ``POST /uploads/{name}/publish``            ``{mode, prepared, decisions}`` -> upload result + report
"""

from __future__ import annotations

import re

from aiohttp import web

from ...errors import ConfigError
from ...service.library import MAX_FILE_BYTES
from . import http_guard
from .answers import Guarded, file_response

UPLOAD_BODY_BYTES = MAX_FILE_BYTES + 1024
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def register(r: Guarded) -> None:
    @r.get("/uploads/{name}")
    async def upload_status(request: web.Request) -> web.Response:
        staged = await (await r.app()).uploads.status(request.match_info["name"])
        return web.json_response(staged.to_dict())

    @r.mutate("PUT", "/uploads/{name}/files/{file}", max_body=UPLOAD_BODY_BYTES, content_type="application/octet-stream")
    async def upload_file(request: web.Request) -> web.Response:
        sha256 = request.query.get("sha256") or None
        if sha256 is not None and not _SHA256_RE.match(sha256):
            raise ConfigError("sha256 must be 64 hexadecimal digits")
        data = await http_guard.read_bytes_body(request, UPLOAD_BODY_BYTES)
        result = await (await r.app()).uploads.put(request.match_info["name"], request.match_info["file"], data, sha256)
        return web.json_response(result.to_dict(), status=200 if result.ok else 422)

    @r.mutate("DELETE", "/uploads/{name}/files/{file}")
    async def remove_upload_file(request: web.Request) -> web.Response:
        removed = await (await r.app()).uploads.remove(request.match_info["name"], request.match_info["file"])
        return web.json_response(removed.to_dict())

    @r.mutate("DELETE", "/uploads/{name}")
    async def discard_upload(request: web.Request) -> web.Response:
        discarded = await (await r.app()).uploads.discard(request.match_info["name"])
        return web.json_response(discarded.to_dict())

    @r.mutate("POST", "/uploads/{name}/prepare")
    async def prepare_upload(request: web.Request) -> web.Response:
        body = await http_guard.read_json_body(request)
        review = await (await r.app()).uploads.prepare(request.match_info["name"], body)
        return web.json_response(review.to_dict())

    @r.get("/uploads/{name}/review")
    async def review_upload(request: web.Request) -> web.Response:
        review = await (await r.app()).uploads.review(request.match_info["name"])
        return web.json_response(review.to_dict())

    @r.get("/uploads/{name}/{stage}/{file}")
    async def upload_image(request: web.Request) -> web.Response:
        f = await (await r.app()).uploads.file(request.match_info["name"], request.match_info["stage"],
                                               request.match_info["file"])
        return file_response(f, "private, no-cache")

    @r.mutate("POST", "/uploads/{name}/publish")
    async def publish_upload(request: web.Request) -> web.Response:
        body = await http_guard.read_json_body(request, max_bytes=4 * 1024 * 1024)
        published = await (await r.app()).uploads.publish(request.match_info["name"], body)
        return web.json_response(published.to_dict())
