"""A seeded fuzz of every route the pack registers: request plans built from a fixed seed, so a
failure names the seed and the request, and the same run reproduces it.

Each :class:`Plan` is one request and what it must get:

- **must refuse**: a DNS-rebinding Host, a foreign Origin, cross-site fetch metadata, a mutation
  without the token, with a wrong one or with a type a cross-site form can send. Any 2xx or 3xx
  is "wrongly accepted".
- **must answer**: the request the sidebar would send, with one part made hostile (a body of wrong
  types, huge, deep, odd Unicode, null, a bool for a number, 401-digit integers, ``1e308``, ``NaN``
  text, extra or missing keys; a hostile path parameter; odd queries; odd but allowed headers).
  It may succeed or be refused, but never with a 5xx, a traceback or a secret in the answer.
  GET routes are also asked with HEAD, as ComfyUI serves them.

Routes are read from :func:`~comfy_lora_cloud.comfy.routes.register_routes` itself, so a route
added later is fuzzed without touching this file (a new body-taking route should add its body to
:data:`BODIES`; it is fuzzed with generic bodies until then).
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from comfy_lora_cloud.comfy.routes import PREFIX, register_routes

from tests.comfy import hostile

SEED = int(os.environ.get("LORA_CLOUD_FUZZ_SEED", "22"))  # another seed explores further; a failure names its seed
PER_ROUTE = 34  # x 55 routes: about 1,900 requests
BIG_INT = hostile.BIG_INT


@dataclass(frozen=True)
class Raw:
    """JSON text put into a body as it is (what ``json.dumps`` cannot write: NaN, 401 digits)."""

    text: str


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    return json.dumps(value)


def route_table() -> list[tuple[str, str]]:
    """(method, path under PREFIX) of every route :func:`register_routes` adds."""
    routes = web.RouteTableDef()
    register_routes(routes, lambda: None)
    return [(r.method, r.path[len(PREFIX):]) for r in routes if isinstance(r, web.RouteDef)]


# what the sidebar sends to each body-taking route (the fuzz breaks one part of it at a time)
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/budgets"): {"max_dph": 0.5, "max_run_usd": 5.0, "max_month_usd": 50.0, "max_run_hours": 4.0},
    ("POST", "/runs"): {"dataset": "cats", "lora_type": "character", "lora_name": "cat-v2", "trigger": "sks",
                        "gpu": "RTX 4090", "provider": "vast", "interruptible": False, "max_run_usd": 2.0,
                        "max_dph": 0.5, "max_hours": 2.0, "config": {"rank": 16, "steps": 800}},
    ("POST", "/train/check"): {"dataset": "cats", "lora_type": "character", "trigger": "sks", "gpu": "RTX 4090",
                               "config": {"rank": 16, "learning_rate": 1e-4, "steps": 800, "resolution": 1024}},
    ("POST", "/sessions"): {"gpu": "RTX 4090", "vram_gb": 24, "idle_minutes": 20, "max_hours": 2,
                            "precision": "fp8"},
    ("PUT", "/datasets/{name}/captions/{file}"): {"caption": "a photo of sks cat", "generation": "0"},
    ("POST", "/uploads/{name}/prepare"): {"lora_type": "character", "caption": "none", "trigger": "sks",
                                          "resolution": 512, "overwrite_captions": False},
    ("POST", "/uploads/{name}/publish"): {"mode": "create", "prepared": False, "force": False,
                                          "decisions": {"000.jpg": {"keep": True, "caption": "sks"}}},
    ("POST", "/notify/settings"): {"notify_toast": True, "notify_desktop": False, "notify_webhook": False,
                                   "webhook_format": "json"},
    ("POST", "/loras/{name}/test"): {"prompt": "photo of sks cat", "compare": False, "client_id": "fuzz"},
}

# a good value for each path parameter (what exists in the seeded app)
GOOD_PARAMS = {"instance_id": "77", "run_id": "run-1", "name": "cats", "file": "001.png", "session_id": "session-1",
               "prompt_id": "p-1", "index": "0", "stage": "files"}
GOOD_PARAMS_BY_ROUTE = {"/loras/{name}": "cat-v1", "/runs/{run_id}/samples/{file}": "s_0250.png",
                        "/templates/{name}": "basic_txt2img"}

# names whose records tests.comfy.hostile.write_hostile_bucket damaged, for every route that takes one
DAMAGED = {
    "run_id": sorted({*hostile.BAD_STATUSES, *hostile.BAD_SPECS, *hostile.ODD_SPECS}),
    "name": sorted({*hostile.BAD_MANIFESTS, "deep-header", "huge-header", "side-list"}),
    "file": ["bomb20k.png", "bomb.jpg", "bomb.gif", "page.png", "page.txt", "x.html", "evil.svg.png"],
}

HOSTILE_VALUES: list[Any] = [
    None, True, False, "false", "true", "", " ", "0", 0, -1, 2**31, -0.0, 1.5, 1e-320, 1e308, -1e308,
    Raw(BIG_INT), Raw("-" + BIG_INT), Raw("1" + "0" * 18), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"),
    Raw("1e999"), "\u0000", "\u202eevil", "cafe\u0301", "\U0001F600" * 50, "x" * 5000, "../../etc/passwd",
    "<script>alert(1)</script>", "line\nbreak", [], {}, [1, 2, 3], {"nested": {"deeper": {}}},
    Raw("[" * 20 + "]" * 20), ["x"] * 2000, {"$ref": "#"}, "RTX 4090\r\nX-Injected: 1",
]
EXTRA_KEYS = ["evil", "__proto__", "constructor", "vast_api_key", "", "k" * 300, "\u00e9t\u00e9", "max_dph ",
              "MAX_DPH", "0"]
WHOLE_BODIES: list[bytes] = [
    b"", b"   ", b"[]", b"null", b"true", b"1", b'"just a string"', b"{", b'{"a":}', b"{'a': 1}",
    b"\xff\xfe{\x00}\x00", b"\xef\xbb\xbf{}", "{}".encode("utf-16"), b'{"a": 1, "a": 2}',
    b"[" * 5000 + b"]" * 5000, BIG_INT.encode(), b"NaN", b'{"x": "' + b"y" * 70_000 + b'"}',
    b"\x00" * 64, b'{"a": "\\ud800"}', b"{}" * 1000,
]
PARAM_TRICKS = ["..", "%2e%2e", "..%2F..%2Fetc", ".hidden", "a%00b", "a%0Ab", "%252e%252e%252f", "x" * 300,
                "caf%E2%80%8Be", "cafe%CC%81", "%C0%AE%C0%AE", "%F0%9F%98%80", "-1", "99999999999999999999999",
                "0x10", "a%20b", "%5C..%5C", "con", "nul.png", "a.PNG", "001.png.html", "%3Cscript%3E", "NaN"]
QUERY_NAMES = ["limit", "offset", "all", "tail", "since", "size", "sha256", "evil", "limit[]", ""]
QUERY_VALUES = ["", "1", "-1", "0", "1e3", "0x10", "1_0", "\uff11\uff12", " 12", BIG_INT, "NaN", "true", "x" * 2000,
                "%", "%zz", "a&b", "[]", "\u0000", "500", "64", "65536", "0" * 64]

REBIND_HOSTS = ["rebind.evil.example:{port}", "evil.example", "127.0.0.1.nip.io:{port}", "localhost.evil.example",
                "attacker.localhost.evil:{port}", "0x7f.0.0.1:{port}", "127.1:{port}", "[::ffff:7f00:1]x"]
FOREIGN_ORIGINS = ["http://evil.example", "null", "http://127.0.0.1", "https://127.0.0.1:{port}",
                   "http://127.0.0.1:{port1}", "http://127.0.0.1:{port}.evil.example", "file://",
                   "chrome-extension://x"]
ALLOWED_HOSTS = ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}", "app.localhost:{port}",
                 "127.0.0.1", "127.0.0.1.:{port}"]
# headers that change nothing about who may ask: the answer must still never be a 5xx
ODD_HEADERS: list[dict[str, str]] = [
    {"X-Forwarded-Host": "evil.example", "X-Forwarded-For": "1.2.3.4", "Forwarded": "host=evil.example"},
    {"Accept": "text/html", "Accept-Encoding": "gzip, br, zstd, *;q=0"},
    {"Accept-Language": "x" * 4000},
    {"Cookie": "a=" + "b" * 3000 + "; " * 50},
    {"X-Long": "v" * 7000},
    {"Range": "bytes=0-1,5-9,-1"}, {"If-None-Match": "*"}, {"Authorization": "Bearer x"},
    {"User-Agent": "\u00e9\u00e8".encode().decode("latin-1")}, {"Content-Type": "application/json; charset=latin-1"},
]


@dataclass
class Plan:
    category: str
    method: str
    path: str  # percent-encoded, with the query
    headers: dict[str, str]
    body: bytes | None
    must_refuse: bool
    route: tuple[str, str] = ("", "")
    note: str = field(default="")


def _good(route: str, name: str) -> str:
    if route.startswith("/loras/") and name == "name":
        return "cat-v1"
    if route.startswith("/runs/") and name == "file":
        return "s_0250.png"
    if route.startswith("/templates/") and name == "name":
        return "basic_txt2img"
    return GOOD_PARAMS[name]


def _fill(route: str, rng: random.Random, hostile: bool) -> str:
    params = re.findall(r"\{(\w+)\}", route)
    trick_at = rng.randrange(len(params)) if hostile and params else -1
    path = route
    for i, name in enumerate(params):
        if i == trick_at:
            value = rng.choice(PARAM_TRICKS)
        elif name in DAMAGED and rng.random() < 0.2:  # a name whose records in the bucket are hostile
            value = quote(rng.choice(DAMAGED[name]), safe="")
        else:
            value = quote(_good(route, name), safe="")
        path = path.replace("{" + name + "}", value, 1)
    return path


def _query(rng: random.Random) -> str:
    pairs = [(rng.choice(QUERY_NAMES), rng.choice(QUERY_VALUES)) for _ in range(rng.randint(1, 3))]
    def raw_ok(v: str) -> bool:  # what may go on the request line unencoded
        return v.isascii() and v.isprintable() and " " not in v

    return "?" + "&".join(f"{quote(k, safe='')}={v if raw_ok(v) and rng.random() < 0.2 else quote(v, safe='')}"
                          for k, v in pairs)


def _mutated_body(template: dict[str, Any], rng: random.Random) -> tuple[bytes, str]:
    body = json.loads(json.dumps(template))
    kind = rng.choice(["value", "value", "value", "nested", "drop", "drop-all", "extra", "whole"])
    if kind == "whole" or not body:
        return rng.choice(WHOLE_BODIES), "whole body"
    if kind == "nested":
        dicts = [(k, v) for k, v in body.items() if isinstance(v, dict) and v]
        if dicts:
            key, inner = rng.choice(dicts)
            sub = rng.choice(sorted(inner))
            inner[sub] = rng.choice(HOSTILE_VALUES)
            return dump(body).encode(), f"{key}.{sub}"
        kind = "value"
    if kind == "value":
        key = rng.choice(sorted(body))
        body[key] = rng.choice(HOSTILE_VALUES)
        return dump(body).encode(), f"{key}=hostile"
    if kind == "drop":
        del body[rng.choice(sorted(body))]
        return dump(body).encode(), "a key missing"
    if kind == "drop-all":
        return b"{}", "every key missing"
    body[rng.choice(EXTRA_KEYS)] = rng.choice(HOSTILE_VALUES)
    return dump(body).encode(), "an extra key"


def _octets(rng: random.Random, png: bytes) -> bytes:
    return rng.choice([b"", b"\x00", png, png[:40], b"<html><script>x</script></html>", rng.randbytes(256),
                       b"GIF89a" + b"\xff" * 10, png + b"trailing"])


def _destructive(method: str, route: str) -> int:
    """Routes that may remove what the others read (the staged upload, the instance, a dataset,
    a LoRA) are fuzzed last, deletions after everything, so the rest reach their handlers'
    depths and not only a 404."""
    return 2 if method == "DELETE" else 1 if route.endswith(("/destroy", "/stop", "/publish")) else 0


def plans(port: int, token: str, header_name: str, png: bytes, *, seed: int = SEED,
          per_route: int = PER_ROUTE) -> list[Plan]:
    """Every route, ``per_route`` requests each, in a seeded order."""
    rng = random.Random(seed)
    out: list[Plan] = []
    fmt = {"port": port, "port1": port + 1}
    for method, route in sorted(route_table(), key=lambda r: _destructive(*r)):
        if method == "HEAD":
            continue
        mutating = method != "GET"
        upload = route == "/uploads/{name}/files/{file}" and method == "PUT"
        content_type = "application/octet-stream" if upload else "application/json"
        template = BODIES.get((method, route), {})
        for _ in range(per_route):
            prefix = rng.choice(["", "/api"])
            hostile_param = rng.random() < 0.25
            path = prefix + PREFIX + _fill(route, rng, hostile_param) + (_query(rng) if rng.random() < 0.35 else "")
            good = {header_name: token, "Content-Type": content_type} if mutating else {}
            if upload:
                body, note = _octets(rng, png), "bytes"
            elif mutating:
                body, note = _mutated_body(template, rng)
            else:
                body, note = (None, "") if rng.random() < 0.8 else (rng.choice(WHOLE_BODIES[:12]), "a GET body")
            verb = "HEAD" if method == "GET" and body is None and rng.random() < 0.1 else method  # as ComfyUI allows
            attack = rng.random()
            if attack < 0.10:
                headers = {**good, "Host": rng.choice(REBIND_HOSTS).format(**fmt)}
                out.append(Plan("fuzz: rebinding Host", verb, path, headers, body, True, (method, route), note))
            elif attack < 0.20:
                headers = {**good, "Origin": rng.choice(FOREIGN_ORIGINS).format(**fmt)}
                out.append(Plan("fuzz: foreign Origin", verb, path, headers, body, True, (method, route), note))
            elif attack < 0.25:
                headers = {**good, "Sec-Fetch-Site": rng.choice(["cross-site", "same-site", "CROSS-SITE"])}
                out.append(Plan("fuzz: cross-site", verb, path, headers, body, True, (method, route), note))
            elif mutating and attack < 0.35:
                bad = rng.choice([{}, {header_name: ""}, {header_name: token[:-1]}, {header_name: token + "x"},
                                  {header_name: token.upper()}, {"x-lora-cloud-tokens": token}])
                out.append(Plan("fuzz: no token", method, path, {"Content-Type": content_type, **bad}, body, True,
                                (method, route), note))
            elif mutating and attack < 0.40:
                ctype = rng.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                    "application/json-patch+json"]
                                   + (["application/json"] if upload else ["application/octet-stream", ""]))
                out.append(Plan("fuzz: form type", method, path, {header_name: token, "Content-Type": ctype}, body,
                                True, (method, route), note))
            else:
                headers = dict(good)
                if rng.random() < 0.3:
                    headers["Host"] = rng.choice(ALLOWED_HOSTS).format(**fmt)
                if rng.random() < 0.3:
                    headers.update(rng.choice(ODD_HEADERS))
                if rng.random() < 0.15:
                    host = headers.get("Host", f"127.0.0.1:{port}")
                    headers.update({"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})
                out.append(Plan("fuzz: hostile input", verb, path, headers, body, False, (method, route), note))
    return out
