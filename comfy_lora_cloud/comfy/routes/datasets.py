"""Routes for the datasets stored in the bucket. Added by :func:`register`, called from
:func:`~.register_routes`, so each handler sits behind the same HTTP guard.

- ``GET  /datasets?offset=&limit=``           a page of datasets, with the problems skipped
- ``GET  /datasets/{name}/images``, ``/captions``  what a dataset holds
- ``GET  /datasets/{name}/images/{file}``     one image (typed by its bytes)
- ``GET  /datasets/{name}/thumbs/{file}?size=``  a JPEG thumbnail
- ``DELETE /datasets/{name}``                 (token; refused while a run uses it)
- ``GET  /datasets/{name}/editor``            images with captions and their generations
- ``PUT  /datasets/{name}/captions/{file}``   ``{caption, generation}``; 409 ``CaptionConflict`` with
  ``current`` (the caption as it now is) when someone else wrote first
- ``GET  /datasets/{name}/validate``          the validation report of a stored dataset
"""

from __future__ import annotations

from aiohttp import web

from ...service.library import SAFE_HEADERS as SAFE_IMAGE_HEADERS
from ...service.library import THUMB_SIZES, CaptionConflict
from . import http_guard
from .answers import Guarded, error_response, file_response, int_param, page_params


def register(r: Guarded) -> None:
    @r.get("/datasets")
    async def datasets(request: web.Request) -> web.Response:
        listing = await (await r.app()).library.dataset_listing(*page_params(request))
        return web.json_response(listing.to_dict())

    @r.get("/datasets/{name}/images")
    async def dataset_images(request: web.Request) -> web.Response:
        images = await (await r.app()).library.dataset_images(request.match_info["name"])
        return web.json_response({"images": [i.to_dict() for i in images]})

    @r.get("/datasets/{name}/captions")
    async def dataset_captions(request: web.Request) -> web.Response:
        library = (await r.app()).library
        return web.json_response({"captions": await library.dataset_captions(request.match_info["name"])})

    @r.get("/datasets/{name}/images/{file}")
    async def dataset_image(request: web.Request) -> web.Response:
        library = (await r.app()).library
        f = await library.dataset_image(request.match_info["name"], request.match_info["file"])
        return file_response(f, "private, max-age=60")

    @r.get("/datasets/{name}/thumbs/{file}")
    async def dataset_thumb(request: web.Request) -> web.Response:
        size = int_param(request, "size", THUMB_SIZES[2])
        library = (await r.app()).library
        data = await library.dataset_thumbnail(request.match_info["name"], request.match_info["file"], size)
        return web.Response(body=data, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=300", **SAFE_IMAGE_HEADERS})

    @r.mutate("DELETE", "/datasets/{name}")
    async def delete_dataset(request: web.Request) -> web.Response:
        deleted = await (await r.app()).library.delete_dataset(request.match_info["name"])
        return web.json_response(deleted.to_dict())

    # ---- the caption editor ----------------------------------------------------------------------
    @r.get("/datasets/{name}/editor")
    async def dataset_editor(request: web.Request) -> web.Response:
        listing = await (await r.app()).captions.listing(request.match_info["name"])
        return web.json_response(listing.to_dict())

    @r.mutate("PUT", "/datasets/{name}/captions/{file}")
    async def write_caption(request: web.Request) -> web.Response:
        body = await http_guard.read_json_body(request)
        captions = (await r.app()).captions
        try:
            saved = await captions.write(request.match_info["name"], request.match_info["file"],
                                         body.get("caption"), body.get("generation"))
        except CaptionConflict as exc:
            resp = error_response(exc)
            data = {"error": "CaptionConflict", "message": exc.message, "status": 409, "current": exc.current.to_dict()}
            return web.json_response(data, status=resp.status)
        return web.json_response(saved.to_dict())

    @r.get("/datasets/{name}/validate")
    async def validate_dataset(request: web.Request) -> web.Response:
        report = await (await r.app()).library.validate(request.match_info["name"])
        return web.json_response(report.to_dict())
