"""HTTP routes under ``/lora_cloud/api/`` for the sidebar (ComfyUI also serves them under ``/api``).

Handlers are thin: parse the request, await one call on the :class:`App`'s noun services, answer
JSON. One module per noun (instances with costs and budgets, runs with the training config,
datasets, uploads, LoRAs, templates, sessions with their outputs, notify), each with a
``register(r)``; :mod:`.answers` and :mod:`.http_guard` are what they share. This module is the
one place they are registered: :func:`register_routes` adds them all to any ``RouteTableDef``, so
tests run them on a plain aiohttp app and ComfyUI gets them through :func:`install`.

Safety:

- every route, GETs and the token included, first passes :mod:`.http_guard` (:class:`GuardedRoutes`): an allowed Host
  (loopback, ComfyUI's ``--listen`` address, the ``allowed_hosts`` setting: no DNS rebinding), an
  exact-match Origin when one is sent, no cross-site ``Sec-Fetch-Site``, a bounded body;
- every ``LoraCloudError`` becomes ``{"error", "message", "status"}`` with the error's HTTP
  status, in :func:`error_response`; anything else is a 500 with no details; every answer
  carries ``X-Content-Type-Options: nosniff``;
- routes that spend money, change budgets, write files or delete data are POST/DELETE and also
  need ``Content-Type: application/json`` (so a cross-site request needs a preflight, which
  fails) and the per-install token in ``X-LoRA-Cloud-Token``;
- files from the bucket are served as :mod:`...service.media` says (images typed by their bytes,
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

from ...errors import LoraCloudError, redact
from ...service.app import App
from ..token import HEADER, load_or_create_token, token_matches
from . import datasets, http_guard, instances, loras, notify, runs, sessions, templates, uploads
from .answers import PREFIX, Handler, error_response, json_error

__all__ = ["PREFIX", "GetApp", "GuardedRoutes", "install", "register_routes"]

log = logging.getLogger(__name__)

GetApp = Callable[[], Union[App, Awaitable[App]]]


class GuardedRoutes:
    """A route table whose every handler sits behind the HTTP guard, bound to how it gets the app
    and the token: what each noun's ``register`` adds its handlers through (an
    :class:`~.answers.Guarded`)."""

    def __init__(self, routes: web.RouteTableDef, get_app: GetApp, listen: Iterable[str]):
        self._routes = routes
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

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return lambda fn: self._routes.get(PREFIX + path)(self.wrap(fn, mutating=False))

    def mutate(self, method: str, path: str, *, max_body: int = http_guard.MAX_BODY_BYTES,
               content_type: str = "application/json") -> Callable[[Handler], Handler]:
        return lambda fn: self._routes.route(method, PREFIX + path)(
            self.wrap(fn, mutating=True, max_body=max_body, content_type=content_type))


def register_routes(routes: web.RouteTableDef, get_app: GetApp, *, listen: Iterable[str] = ("127.0.0.1",)) -> None:
    """Add every ``/lora_cloud/api/...`` handler to ``routes``, each behind the HTTP guard.

    ``listen``: the addresses the server listens on (ComfyUI's ``--listen``), whose names the
    Host rule accepts besides loopback and the ``allowed_hosts`` setting.
    """
    r = GuardedRoutes(routes, get_app, listen)

    @r.get("/token")
    async def token(request: web.Request) -> web.Response:
        return web.json_response({"header": HEADER, "token": await r.token()},
                                 headers={"Cache-Control": "no-store"})

    instances.register(r)  # instances, costs, budgets
    runs.register(r)  # runs, their samples and configs, the quick launch, the config editor
    datasets.register(r)  # stored datasets: images, thumbnails, the caption editor, validation
    loras.register(r)  # LoRAs and trying one
    uploads.register(r)  # staged uploads and the preparation review
    notify.register(r)  # notification channels, a test notification
    templates.register(r)  # the workflow templates
    sessions.register(r)  # remote ComfyUI sessions and their outputs (Generate)


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
    from ..events import start_background
    from ..wiring import holder, loop

    register_routes(PromptServer.instance.routes, holder.get, listen=http_guard.comfy_listen_addresses())
    if not os.environ.get("LORA_CLOUD_REMOTE"):  # a session's ComfyUI: its supervisor does the remote side's work
        start_background(holder.get, loop=loop)  # the loop the app's tunnels live on too
    _installed = True
    return True
