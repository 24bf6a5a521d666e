"""HTTP routes under ``/lora_cloud/api/`` for the sidebar (ComfyUI also serves them under ``/api``).

Handlers are thin: parse the request, await one call on the :class:`App`'s noun services, answer
JSON.
:func:`register_routes` adds them to any ``RouteTableDef``, so tests run them on a plain aiohttp
app and ComfyUI gets them through :func:`install`.

Safety:

- every route, GETs and the token included, first passes :mod:`.http_guard`: an allowed Host
  (loopback, ComfyUI's ``--listen`` address, the ``allowed_hosts`` setting: no DNS rebinding), an
  exact-match Origin when one is sent, no cross-site ``Sec-Fetch-Site``, a bounded body;
- every ``LoraCloudError`` becomes ``{"error", "message", "status"}`` with the error's HTTP
  status, in :func:`error_response`; anything else is a 500 with no details; every answer
  carries ``X-Content-Type-Options: nosniff``;
- routes that spend money, change budgets, write files or delete data are POST/DELETE and also
  need ``Content-Type: application/json`` (so a cross-site request needs a preflight, which
  fails) and the per-install token in ``X-LoRA-Cloud-Token``;
- files from the bucket are served as :mod:`..service.media` says (images typed by their bytes,
  anything else as a sandboxed attachment); listings carry the ``problems`` they skipped;
- names come from the URL and are validated by the service layer (path tricks give 400).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Union

from aiohttp import web

from ..errors import ConfigError, LoraCloudError, redact
from ..service.app import App
from ..service.library import THUMB_SIZES
from ..service.library import SAFE_HEADERS as SAFE_IMAGE_HEADERS
from . import http_guard
from .answers import PREFIX, error_response, file_response, int_param, json_error, page_params
from .token import HEADER, load_or_create_token, token_matches

log = logging.getLogger(__name__)

GetApp = Callable[[], Union[App, Awaitable[App]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Routes:
    """The handlers, bound to how they get the app and the token."""

    def __init__(self, get_app: GetApp, listen: Iterable[str]):
        self._get_app = get_app
        self._listen = tuple(listen)
        self._tokens: dict[Path, str] = {}
        self._policy: tuple[tuple[str, ...], http_guard.HostPolicy] | None = None

    async def app(self) -> App:
        app = self._get_app()
        if inspect.isawaitable(app):
            app = await app
        return app  # type: ignore[return-value]

    async def token(self) -> str:
        home = (await self.app()).settings.home
        if home not in self._tokens:
            self._tokens[home] = await asyncio.to_thread(load_or_create_token, home)
        return self._tokens[home]

    async def policy(self) -> http_guard.HostPolicy:
        """Which Hosts and Origins to answer: rebuilt when ``allowed_hosts`` changes (the app
        re-reads its settings when the files change)."""
        allowed = (await self.app()).settings.allowed_host_list
        if self._policy is None or self._policy[0] != allowed:
            self._policy = (allowed, http_guard.HostPolicy(self._listen, allowed))
        return self._policy[1]

    async def guard(self, request: web.Request, mutating: bool, *, max_body: int = http_guard.MAX_BODY_BYTES,
                    content_type: str = "application/json") -> web.Response | None:
        """Refuse a request from a foreign Host or Origin; a mutating one also when it is not
        JSON (or, for an upload, ``application/octet-stream``: neither is a type a cross-site
        form can send without a preflight) or lacks the token."""
        refused = http_guard.refusal(request, await self.policy(), max_body=max_body)
        if refused is not None:
            return json_error(refused.status, refused.error, refused.message)
        if not mutating:
            return None
        if request.content_type != content_type:
            return json_error(415, "UnsupportedMediaType", f"send Content-Type: {content_type}")
        if not token_matches(await self.token(), request.headers.get(HEADER)):
            return json_error(403, "BadToken", f"missing or wrong {HEADER} header")
        return None

    def wrap(self, fn: Handler, mutating: bool, *, max_body: int = http_guard.MAX_BODY_BYTES,
             content_type: str = "application/json") -> Handler:
        """The guard, then the handler; our errors become JSON, an unexpected exception's text
        never reaches the client, and every answer says ``nosniff``."""

        @functools.wraps(fn)
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                resp = await self.guard(request, mutating, max_body=max_body,
                                        content_type=content_type) or await fn(request)
            except LoraCloudError as exc:
                resp = error_response(exc)
            except web.HTTPException:
                raise
            except Exception:
                log.exception("lora_cloud route %s %s failed", request.method, redact(request.path))
                resp = json_error(500, "InternalError", "internal error; see the ComfyUI log")
            resp.headers.setdefault("X-Content-Type-Options", "nosniff")
            return resp

        return handler


def register_routes(routes: web.RouteTableDef, get_app: GetApp, *, listen: Iterable[str] = ("127.0.0.1",)) -> None:
    """Add every ``/lora_cloud/api/...`` handler to ``routes``, each behind the HTTP guard.

    ``listen``: the addresses the server listens on (ComfyUI's ``--listen``), whose names the
    Host rule accepts besides loopback and the ``allowed_hosts`` setting.
    """
    r = _Routes(get_app, listen)

    def get(path: str) -> Callable[[Handler], Handler]:
        return lambda fn: routes.get(PREFIX + path)(r.wrap(fn, mutating=False))

    def mutate(method: str, path: str) -> Callable[[Handler], Handler]:
        return lambda fn: routes.route(method, PREFIX + path)(r.wrap(fn, mutating=True))

    @get("/token")
    async def token(request: web.Request) -> web.Response:
        return web.json_response({"header": HEADER, "token": await r.token()},
                                 headers={"Cache-Control": "no-store"})

    # ---- instances, costs, budgets ---------------------------------------------------------------
    @get("/instances")
    async def instances(request: web.Request) -> web.Response:
        everything = request.query.get("all") in ("1", "true")
        return web.json_response({"instances": [i.to_dict() for i in await (await r.app()).instances.list(everything)]})

    @mutate("POST", "/instances/{instance_id}/stop")
    async def stop_instance(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).instances.stop(request.match_info["instance_id"])).to_dict())

    @mutate("POST", "/instances/{instance_id}/destroy")
    async def destroy_instance(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).instances.destroy(request.match_info["instance_id"])).to_dict())

    @get("/instances/{instance_id}/logs")
    async def instance_logs(request: web.Request) -> web.Response:
        tail = int_param(request, "tail", 200)
        logs = await (await r.app()).instances.logs(request.match_info["instance_id"], tail)
        return web.json_response(logs.to_dict())

    @get("/costs")
    async def costs(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).costs.summary()).to_dict())

    @get("/budgets")
    async def budgets(request: web.Request) -> web.Response:
        return web.json_response((await r.app()).costs.budgets().to_dict())

    @mutate("POST", "/budgets")
    async def set_budgets(request: web.Request) -> web.Response:
        changed = await (await r.app()).costs.set_budgets(await http_guard.read_json_body(request))
        return web.json_response(changed.to_dict())

    # ---- runs ------------------------------------------------------------------------------------
    @get("/runs")
    async def runs(request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 50)
        if not 1 <= limit <= 500:
            raise ConfigError("limit must be between 1 and 500")
        return web.json_response((await (await r.app()).runs.listing(limit, int_param(request, "offset", 0))).to_dict())

    @get("/runs/{run_id}")
    async def run(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).runs.get(request.match_info["run_id"])).to_dict())

    @mutate("POST", "/runs/{run_id}/stop")
    async def stop_run(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).runs.stop(request.match_info["run_id"])).to_dict())

    @get("/runs/{run_id}/events")
    async def run_events(request: web.Request) -> web.Response:
        since = int_param(request, "since", 0)
        return web.json_response((await (await r.app()).runs.events(request.match_info["run_id"], since)).to_dict())

    @get("/runs/{run_id}/samples")
    async def run_samples(request: web.Request) -> web.Response:
        return web.json_response((await (await r.app()).runs.sample_listing(request.match_info["run_id"])).to_dict())

    @get("/runs/{run_id}/samples/{file}")
    async def run_sample(request: web.Request) -> web.Response:
        f = await (await r.app()).runs.sample(request.match_info["run_id"], request.match_info["file"])
        return file_response(f, "private, max-age=60")

    # ---- datasets --------------------------------------------------------------------------------
    @get("/datasets")
    async def datasets(request: web.Request) -> web.Response:
        listing = await (await r.app()).library.dataset_listing(*page_params(request))
        return web.json_response(listing.to_dict())

    @get("/datasets/{name}/images")
    async def dataset_images(request: web.Request) -> web.Response:
        images = await (await r.app()).library.dataset_images(request.match_info["name"])
        return web.json_response({"images": [i.to_dict() for i in images]})

    @get("/datasets/{name}/captions")
    async def dataset_captions(request: web.Request) -> web.Response:
        library = (await r.app()).library
        return web.json_response({"captions": await library.dataset_captions(request.match_info["name"])})

    @get("/datasets/{name}/images/{file}")
    async def dataset_image(request: web.Request) -> web.Response:
        library = (await r.app()).library
        f = await library.dataset_image(request.match_info["name"], request.match_info["file"])
        return file_response(f, "private, max-age=60")

    @get("/datasets/{name}/thumbs/{file}")
    async def dataset_thumb(request: web.Request) -> web.Response:
        size = int_param(request, "size", THUMB_SIZES[2])
        library = (await r.app()).library
        data = await library.dataset_thumbnail(request.match_info["name"], request.match_info["file"], size)
        return web.Response(body=data, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=300", **SAFE_IMAGE_HEADERS})

    @mutate("DELETE", "/datasets/{name}")
    async def delete_dataset(request: web.Request) -> web.Response:
        deleted = await (await r.app()).library.delete_dataset(request.match_info["name"])
        return web.json_response(deleted.to_dict())

    # ---- LoRAs -----------------------------------------------------------------------------------
    @get("/loras")
    async def loras(request: web.Request) -> web.Response:
        listing = await (await r.app()).library.lora_listing(*page_params(request))
        return web.json_response(listing.to_dict())

    @get("/loras/{name}/metadata")
    async def lora_metadata(request: web.Request) -> web.Response:
        metadata = await (await r.app()).library.lora_metadata(request.match_info["name"])
        return web.json_response(metadata.to_dict())

    @mutate("POST", "/loras/{name}/download")
    async def download_lora(request: web.Request) -> web.Response:
        downloaded = await (await r.app()).library.download_lora(request.match_info["name"])
        return web.json_response(downloaded.to_dict())

    @mutate("DELETE", "/loras/{name}")
    async def delete_lora(request: web.Request) -> web.Response:
        deleted = await (await r.app()).library.delete_lora(request.match_info["name"])
        return web.json_response(deleted.to_dict())

    # ---- more nouns, one module each -------------------------------------------------------------
    from . import routes_datasets, routes_loras, routes_notify, routes_sessions, routes_training

    routes_datasets.register(routes, r)  # captions, uploads, preparation review, validation
    routes_training.register(routes, r)  # config editor, presets, run configs
    routes_notify.register(routes, r)  # notification channels, a test notification
    routes_loras.register(routes, r)  # LoRA tests and the workflow templates
    routes_sessions.register(routes, r)  # remote ComfyUI sessions, their outputs, templates (Generate)


_installed = False


def install() -> bool:
    """Register the routes on ComfyUI's server and start the pack's background loop, once.

    Returns False (and does nothing) outside ComfyUI. Must run while ComfyUI imports packs: the
    router is frozen once the server starts.
    """
    global _installed
    if _installed:
        return True
    try:
        from server import PromptServer
    except ImportError:
        return False
    from .events import start_background
    from .wiring import holder, loop

    register_routes(PromptServer.instance.routes, holder.get, listen=http_guard.comfy_listen_addresses())
    if not os.environ.get("LORA_CLOUD_REMOTE"):  # a session's ComfyUI: its supervisor does the remote side's work
        start_background(holder.get, loop=loop)  # the loop the app's tunnels live on too
    _installed = True
    return True
