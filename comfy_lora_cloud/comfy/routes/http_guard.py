"""The boundary with the browser: which requests the ``/lora_cloud/api/`` routes answer at all.

:func:`refusal` runs before every handler, GETs included (``register_routes`` applies it):

1. **Host.** A page on ``rebind.evil.example`` whose name an attacker re-points at 127.0.0.1
   (DNS rebinding) is, to the browser, same-origin with itself: no CORS rule stops it, and
   ComfyUI's own origin check only runs when Host is a loopback name. What gives it away is the
   ``Host`` header, which carries the attacker's name. So a request is answered only when its
   Host names loopback (``localhost``, ``*.localhost``, 127.0.0.0/8, ``::1``), an address ComfyUI
   listens on (``--listen``; when that is a wildcard such as 0.0.0.0, any IP address, since a
   rebinding page always comes under a DNS name), or an entry of the ``allowed_hosts`` setting (a
   ComfyUI behind a reverse proxy or under a LAN name).
2. **Origin.** When present it must equal this request's own origin exactly, scheme, host and
   port (default ports filled in), or an origin listed in ``allowed_hosts`` (a proxy that
   terminates TLS or rewrites Host). ``null`` never matches. ``http://127.0.0.1`` is not
   ``http://127.0.0.1:8188``: another local web server is another origin.
3. **Sec-Fetch-Site**, when the browser sends it, must be ``same-origin`` or ``none`` (typed in
   the address bar): a cross-site ``<img>`` or form, which sends no Origin, is refused too.

Bodies are bounded: :func:`read_json_body` reads at most :data:`MAX_BODY_BYTES` (a declared
``Content-Length`` over it is refused before reading) and refuses JSON nested deeper than
:data:`MAX_JSON_DEPTH` and parses it with :func:`..jsonsafe.loads`, which refuses ``NaN``,
``Infinity``, numbers too big to be finite and integers too long for a float (a 401-digit
``max_dph`` is a 400, not an OverflowError in a budget check). No refusal echoes the request's
headers.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterable

from aiohttp import web

from ... import jsonsafe
from ...errors import ConfigError, RequestTooLarge

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
WILDCARD_LISTEN = frozenset({"", "0.0.0.0", "::", "*"})
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_BODY_BYTES = 64 * 1024  # the largest body a route takes is a few hundred bytes
MAX_JSON_DEPTH = 16
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class HostPort:
    """A parsed ``Host`` header or origin authority: lowercase name without brackets or a
    trailing dot, and the port when one was given."""

    name: str
    port: int | None


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    message: str


def _ip(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def parse_authority(value: str) -> HostPort | None:
    """``name[:port]`` or ``[v6][:port]`` as a browser sends it in Host; None when malformed."""
    if not value or len(value) > 300 or any(c.isspace() or ord(c) < 33 or ord(c) > 126 for c in value):
        return None
    if any(c in value for c in "/\\@?#%"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if _ip(name) is None or not isinstance(_ip(name), ipaddress.IPv6Address):
            return None
    else:
        name, sep, rest = value.partition(":")
        rest = sep + rest
        if ":" in rest[1:]:
            return None
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isascii() or not rest[1:].isdigit() or len(rest) > 6:
            return None
        port = int(rest[1:])
        if not 0 < port < 65536:
            return None
    name = name.lower().rstrip(".")
    if not name:
        return None
    return HostPort(name, port)


def parse_origin(value: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` -> (scheme, host, port with the scheme's default); None for
    ``null``, other schemes, paths, user info or anything malformed."""
    if not value or value.strip().lower() == "null" or len(value) > 300:
        return None
    scheme, sep, authority = value.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        return None
    hp = parse_authority(authority)
    if hp is None:
        return None
    return scheme, hp.name, hp.port or DEFAULT_PORTS[scheme]


class HostPolicy:
    """Which Host names and extra origins this install answers to."""

    def __init__(self, listen: Iterable[str] = ("127.0.0.1",), allowed: Iterable[str] = ()):
        listen = [a.strip().lower().strip("[]") for a in listen]
        self.any_ip = any(a in WILDCARD_LISTEN for a in listen)
        self.listen_ips = {ip for ip in (_ip(a) for a in listen) if ip is not None}
        self.listen_names = {a.rstrip(".") for a in listen if a not in WILDCARD_LISTEN and _ip(a) is None}
        self.names: set[str] = set()
        self.origins: set[tuple[str, str, int]] = set()
        for entry in allowed:
            entry = entry.strip().lower()
            if "://" in entry:
                origin = parse_origin(entry.rstrip("/"))
                if origin is not None:
                    self.origins.add(origin)
                    self.names.add(origin[1])
            elif entry:
                self.names.add(entry.strip("[]").rstrip("."))

    def allows_host(self, name: str) -> bool:
        if name in LOOPBACK_NAMES or name.endswith(".localhost"):
            return True  # RFC 6761: browsers resolve *.localhost to loopback themselves
        ip = _ip(name)
        if ip is not None:
            mapped = getattr(ip, "ipv4_mapped", None)
            if ip.is_loopback or (mapped is not None and mapped.is_loopback):
                return True
            return self.any_ip or ip in self.listen_ips or str(ip) in self.names
        return name in self.listen_names or name in self.names

    def allows_origin(self, origin: tuple[str, str, int], own: tuple[str, str, int]) -> bool:
        return origin == own or origin in self.origins


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(name: str) -> None:
    """Tell the person behind a reverse proxy how to let their own name in (once per name)."""
    with _warned_lock:
        if name in _warned or len(_warned) > 100:
            return
        _warned.add(name)
    log.warning("lora_cloud refused a request for Host %r; if you open ComfyUI under that name, run "
                "`lora-cloud config set allowed_hosts %s`", name[:100], name[:100])


def refusal(request: web.Request, policy: HostPolicy, *, max_body: int = MAX_BODY_BYTES) -> Refusal | None:
    """Why this request must not be answered, or None. Cheap: headers only."""
    host = parse_authority(request.headers.get("Host", ""))
    if host is None or not policy.allows_host(host.name):
        if host is not None:
            _warn_once(host.name)
        return Refusal(403, "ForeignHost", "this Host is not one LoRA Cloud answers to "
                                           "(add it with `lora-cloud config set allowed_hosts NAME`)")
    origin_header = request.headers.get("Origin")
    if origin_header is not None:
        origin = parse_origin(origin_header)
        scheme = request.scheme.lower()
        own = (scheme, host.name, host.port or DEFAULT_PORTS.get(scheme, 0))
        if origin is None or not policy.allows_origin(origin, own):
            return Refusal(403, "CrossOrigin", "cross-origin requests are refused")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in ALLOWED_FETCH_SITES:
        return Refusal(403, "CrossOrigin", "cross-site requests are refused")
    length = request.content_length
    if length is not None and length > max_body:
        return Refusal(413, "RequestTooLarge", f"request bodies are limited to {max_body} bytes")
    return None


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in a JSON text (brackets inside strings not counted).

    Checked before parsing, so a body of 60 000 ``[`` is a clear 400, not a RecursionError."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


async def read_bytes_body(request: web.Request, max_bytes: int, *, chunk: int = 256 * 1024) -> bytes:
    """The raw body, at most ``max_bytes`` (a larger one is refused while it streams, before it is
    all in memory)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestTooLarge(f"request bodies are limited to {max_bytes} bytes")
    raw = bytearray()
    async for part in request.content.iter_chunked(chunk):
        raw += part
        if len(raw) > max_bytes:
            raise RequestTooLarge(f"request bodies are limited to {max_bytes} bytes")
    return bytes(raw)


async def read_json_body(request: web.Request, *, max_bytes: int = MAX_BODY_BYTES,
                         max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when there is none), read within the limits."""
    if not request.can_read_body:
        return {}
    raw = await read_bytes_body(request, max_bytes, chunk=16 * 1024)
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the request body is not UTF-8") from None
    if json_depth(text) > max_depth:
        raise ConfigError(f"the request body nests deeper than {max_depth} levels")
    try:
        body = jsonsafe.loads(text, max_depth=max_depth, max_bytes=max_bytes)
    except ValueError as exc:  # malformed, or a number our arithmetic cannot take (401 digits, 1e999, NaN)
        raise ConfigError(f"the request body is not JSON we accept: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object")
    return body


def comfy_listen_addresses() -> tuple[str, ...]:
    """The addresses ComfyUI was told to listen on (``--listen``, comma-separated; a bare
    ``--listen`` means ``0.0.0.0,::``). Read from ComfyUI's parsed arguments, so only inside it."""
    try:
        from comfy.cli_args import args  # ComfyUI's module
    except ImportError:
        return ("127.0.0.1",)
    listen = getattr(args, "listen", None) or "127.0.0.1"
    return tuple(a.strip() for a in str(listen).split(",") if a.strip()) or ("127.0.0.1",)
