"""The HTTP answers every route module shares: the API prefix, a pack error as JSON, query
integers and pages, a file from the bucket as a response, and :class:`Guarded`, what a noun's
module registers its handlers through. Kept apart from the route modules and from the package's
``__init__`` (which imports them all) so each of them imports this and none imports another."""

from __future__ import annotations

import re
from typing import Awaitable, Callable, Protocol

from aiohttp import web

from ...errors import ConfigError, LoraCloudError, redact
from ...service.app import App
from ...service.library import ServedFile
from .http_guard import MAX_BODY_BYTES

PREFIX = "/lora_cloud/api"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Guarded(Protocol):
    """The route table as a noun's ``register`` sees it: every handler added through
    :meth:`get` or :meth:`mutate` sits behind the HTTP guard (``routes/__init__.py``)."""

    async def app(self) -> App: ...

    def get(self, path: str) -> Callable[[Handler], Handler]:
        """A GET (and HEAD) under :data:`PREFIX`: Host, Origin and body checks only."""
        ...

    def mutate(self, method: str, path: str, *, max_body: int = MAX_BODY_BYTES,
               content_type: str = "application/json") -> Callable[[Handler], Handler]:
        """A route that spends money, writes or deletes: also the content type and the token."""
        ...


def json_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": redact(message), "status": status}, status=status)


def error_response(exc: LoraCloudError) -> web.Response:
    """The one place a pack error becomes an HTTP answer (with its ``public_details``, e.g. the
    runs a :class:`~comfy_lora_cloud.errors.DatasetInUse` names)."""
    extra = {k: exc.details[k] for k in exc.public_details if k in exc.details}
    if not extra:
        return json_error(exc.http_status, type(exc).__name__, exc.message)
    return web.json_response({"error": type(exc).__name__, "message": redact(exc.message), "status": exc.http_status,
                              **extra}, status=exc.http_status)


_INT_RE = re.compile(r"^-?[0-9]{1,9}$")


def int_param(request: web.Request, name: str, default: int) -> int:
    """A query integer in plain ASCII digits (``int()`` would also take ``1_000``, `` 7`` and
    other scripts' digits)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INT_RE.match(raw):
        raise ConfigError(f"{name} must be an integer")
    return int(raw)


#: entries a listing route answers with when not told: a page, so a bucket of 1,000 datasets
#: costs one listing plus a page of manifest reads; ?offset= pages on
LIST_PAGE = 100


def page_params(request: web.Request) -> tuple[int, int]:
    """``?offset=&limit=`` of a listing route (checked by :class:`~..service.listings.Page`)."""
    return int_param(request, "offset", 0), int_param(request, "limit", LIST_PAGE)


def file_response(f: ServedFile, cache: str) -> web.Response:
    return web.Response(body=f.body, content_type=f.content_type, headers={**f.headers, "Cache-Control": cache})
