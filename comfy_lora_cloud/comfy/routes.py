"""HTTP routes under ``/lora_cloud/api/`` for the sidebar (ComfyUI also serves them under ``/api``).

Handlers are thin: parse the request, await one call on the :class:`App`'s noun services, answer
JSON.
:func:`register_routes` adds them to any ``RouteTableDef``, so tests run them on a plain aiohttp
app and ComfyUI gets them through :func:`install`.

Safety (reference/comfyui-contract.md §2, §6):

- every ``LoraCloudError`` becomes ``{"error", "message", "status"}`` with the error's HTTP
  status, in :func:`error_response`; anything else is a 500 with no details;
- routes that spend money, change budgets, write files or delete data are POST/DELETE and go
  through :func:`_guard`: same origin only (a present ``Origin``, ``null`` included, must equal
  ``Host``), ``Content-Type: application/json`` only (so a cross-site request needs a preflight,
  which fails) and the per-install token in ``X-LoRA-Cloud-Token``;
- ``GET /lora_cloud/api/token`` refuses cross-origin requests too;
- names come from the URL and are validated by the service layer (path tricks give 400).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Union
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import ConfigError, LoraCloudError, redact
from ..service.app import App
from ..service.files import THUMB_SIZES
from .token import HEADER, load_or_create_token, token_matches

log = logging.getLogger(__name__)

PREFIX = "/lora_cloud/api"
GetApp = Callable[[], Union[App, Awaitable[App]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": redact(message), "status": status}, status=status)


def error_response(exc: LoraCloudError) -> web.Response:
    """The one place a pack error becomes an HTTP answer."""
    return json_error(exc.http_status, type(exc).__name__, exc.message)


def _hosts_match(origin_netloc: str, host: str) -> bool:
    """ComfyUI's rule: equal host names, and equal ports when both sides name one."""
    a, b = urlsplit("//" + origin_netloc.lower()), urlsplit("//" + host.lower())
    try:
        ports = (a.port, b.port)
    except ValueError:
        return False
    if a.hostname != b.hostname:
        return False
    return None in ports or ports[0] == ports[1]


def is_same_origin(request: web.Request) -> bool:
    """True when the request carries no ``Origin`` or one whose host equals ``Host``.

    Stricter than ComfyUI's own check: ``Origin: null`` (sandboxed frames, file://) is refused,
    and so is ``Sec-Fetch-Site: cross-site``.
    """
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc if origin.strip().lower() != "null" else ""
    host = request.headers.get("Host", "")
    return bool(netloc and host) and _hosts_match(netloc, host)


class _Routes:
    """The handlers, bound to how they get the app and the token."""

    def __init__(self, get_app: GetApp):
        self._get_app = get_app
        self._tokens: dict[Path, str] = {}

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

    async def guard(self, request: web.Request) -> web.Response | None:
        """Refuse a mutating request that is cross-origin, not JSON, or without the token."""
        if not is_same_origin(request):
            return json_error(403, "CrossOrigin", "cross-origin requests are refused")
        if request.content_type != "application/json":
            return json_error(415, "UnsupportedMediaType", "send Content-Type: application/json")
        if not token_matches(await self.token(), request.headers.get(HEADER)):
            return json_error(403, "BadToken", f"missing or wrong {HEADER} header")
        return None


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ConfigError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object")
    return body


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer") from None


def _handled(fn: Handler) -> Handler:
    """Map our errors to JSON; never let an unexpected exception's text reach the client."""

    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except LoraCloudError as exc:
            return error_response(exc)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("lora_cloud route %s %s failed", request.method, redact(request.path))
            return json_error(500, "InternalError", "internal error; see the ComfyUI log")

    return wrapper


def register_routes(routes: web.RouteTableDef, get_app: GetApp) -> None:
    """Add every ``/lora_cloud/api/...`` handler to ``routes``."""
    r = _Routes(get_app)

    def get(path: str) -> Callable[[Handler], Handler]:
        return lambda fn: routes.get(PREFIX + path)(_handled(fn))

    def mutate(method: str, path: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            async def guarded(request: web.Request) -> web.StreamResponse:
                refused = await r.guard(request)
                return refused if refused is not None else await fn(request)

            functools.update_wrapper(guarded, fn)
            routes.route(method, PREFIX + path)(_handled(guarded))
            return fn

        return deco

    @get("/token")
    async def token(request: web.Request) -> web.Response:
        if not is_same_origin(request):
            return json_error(403, "CrossOrigin", "cross-origin requests are refused")
        return web.json_response({"header": HEADER, "token": await r.token()},
                                 headers={"Cache-Control": "no-store"})

    # ---- instances, costs, budgets ---------------------------------------------------------------
    @get("/instances")
    async def instances(request: web.Request) -> web.Response:
        everything = request.query.get("all") in ("1", "true")
        return web.json_response({"instances": await (await r.app()).instances.list(everything)})

    @mutate("POST", "/instances/{instance_id}/stop")
    async def stop_instance(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).instances.stop(request.match_info["instance_id"]))

    @mutate("POST", "/instances/{instance_id}/destroy")
    async def destroy_instance(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).instances.destroy(request.match_info["instance_id"]))

    @get("/instances/{instance_id}/logs")
    async def instance_logs(request: web.Request) -> web.Response:
        tail = _int_param(request, "tail", 200)
        return web.json_response(await (await r.app()).instances.logs(request.match_info["instance_id"], tail))

    @get("/costs")
    async def costs(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).costs.summary())

    @get("/budgets")
    async def budgets(request: web.Request) -> web.Response:
        return web.json_response((await r.app()).costs.budgets())

    @mutate("POST", "/budgets")
    async def set_budgets(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).costs.set_budgets(await _json_body(request)))

    # ---- runs ------------------------------------------------------------------------------------
    @get("/runs")
    async def runs(request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", 50)
        if not 1 <= limit <= 500:
            raise ConfigError("limit must be between 1 and 500")
        return web.json_response({"runs": await (await r.app()).runs.list(limit)})

    @get("/runs/{run_id}")
    async def run(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).runs.get(request.match_info["run_id"]))

    @mutate("POST", "/runs")
    async def start_run(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).runs.start_from_body(await _json_body(request)))

    @mutate("POST", "/runs/{run_id}/stop")
    async def stop_run(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).runs.stop(request.match_info["run_id"]))

    @get("/runs/{run_id}/events")
    async def run_events(request: web.Request) -> web.Response:
        since = _int_param(request, "since", 0)
        return web.json_response(await (await r.app()).runs.events(request.match_info["run_id"], since))

    @get("/runs/{run_id}/samples")
    async def run_samples(request: web.Request) -> web.Response:
        return web.json_response({"samples": await (await r.app()).runs.samples(request.match_info["run_id"])})

    @get("/runs/{run_id}/samples/{file}")
    async def run_sample(request: web.Request) -> web.Response:
        data, ctype = await (await r.app()).runs.sample(request.match_info["run_id"], request.match_info["file"])
        return web.Response(body=data, content_type=ctype, headers={"Cache-Control": "private, max-age=60"})

    # ---- datasets --------------------------------------------------------------------------------
    @get("/datasets")
    async def datasets(request: web.Request) -> web.Response:
        return web.json_response({"datasets": await (await r.app()).library.datasets()})

    @get("/datasets/{name}/images")
    async def dataset_images(request: web.Request) -> web.Response:
        return web.json_response({"images": await (await r.app()).library.dataset_images(request.match_info["name"])})

    @get("/datasets/{name}/captions")
    async def dataset_captions(request: web.Request) -> web.Response:
        library = (await r.app()).library
        return web.json_response({"captions": await library.dataset_captions(request.match_info["name"])})

    @get("/datasets/{name}/images/{file}")
    async def dataset_image(request: web.Request) -> web.Response:
        library = (await r.app()).library
        data, ctype = await library.dataset_image(request.match_info["name"], request.match_info["file"])
        return web.Response(body=data, content_type=ctype, headers={"Cache-Control": "private, max-age=60"})

    @get("/datasets/{name}/thumbs/{file}")
    async def dataset_thumb(request: web.Request) -> web.Response:
        size = _int_param(request, "size", THUMB_SIZES[2])
        library = (await r.app()).library
        data = await library.dataset_thumbnail(request.match_info["name"], request.match_info["file"], size)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @mutate("DELETE", "/datasets/{name}")
    async def delete_dataset(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).library.delete_dataset(request.match_info["name"]))

    # ---- LoRAs -----------------------------------------------------------------------------------
    @get("/loras")
    async def loras(request: web.Request) -> web.Response:
        return web.json_response({"loras": await (await r.app()).library.loras()})

    @get("/loras/{name}/metadata")
    async def lora_metadata(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).library.lora_metadata(request.match_info["name"]))

    @mutate("POST", "/loras/{name}/download")
    async def download_lora(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).library.download_lora(request.match_info["name"]))

    @mutate("DELETE", "/loras/{name}")
    async def delete_lora(request: web.Request) -> web.Response:
        return web.json_response(await (await r.app()).library.delete_lora(request.match_info["name"]))


_installed = False


def install() -> bool:
    """Register the routes on ComfyUI's server and start the pack's background loop, once.

    Returns False (and does nothing) outside ComfyUI. Must run while ComfyUI imports packs: the
    router is frozen once the server starts (contract §2).
    """
    global _installed
    if _installed:
        return True
    try:
        from server import PromptServer
    except ImportError:
        return False
    from .events import start_background
    from .wiring import holder

    register_routes(PromptServer.instance.routes, holder.get)
    start_background(holder.get)
    _installed = True
    return True
