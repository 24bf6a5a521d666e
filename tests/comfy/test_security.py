"""Issue 10: the routes attacked on purpose, mounted the way ComfyUI mounts them (every route at
``/path`` and ``/api/path``), over a service whose bucket also holds hostile content.

``test_hostile_requests_are_all_refused`` fires every hostile request below and prints a tally;
it fails unless "wrongly accepted", "5xx answers" and "other failures" are all 0:

- a foreign Host on every route (DNS rebinding), with the real token and JSON on mutations;
- a foreign, ``null``, wrong-port, wrong-scheme or look-alike Origin on every route;
- ``Sec-Fetch-Site: cross-site`` / ``same-site`` on every GET;
- token fetches with malformed or foreign Host, Origin and fetch metadata;
- every route parameter with traversal and encoding tricks (raw, not normalised by the client);
- query parameters that ``int()`` would have taken (``1_0``, full-width digits, spaces);
- oversized (declared and chunked), deeply nested, non-UTF-8, NaN/Infinity, 401-digit integer
  and ill-typed bodies;
- hostile bucket content: HTML/SVG samples, HTML named .png, image bombs by header, bad dataset
  and run names, manifests, status and spec files of every wrong shape, hostile LoRA headers.

Then nothing happened: no data deleted, no budget changed, no run started, no instance touched.

``test_seeded_fuzz_of_every_route`` (:mod:`tests.comfy.fuzz`) then sends about 1,900 generated
requests to every route ``register_routes`` adds, from a fixed seed (``LORA_CLOUD_FUZZ_SEED``
picks another). Those that must be refused (rebinding Host, foreign Origin, cross-site, no or
wrong token, a form's type) go first: all are refused, and the home is as it was after them.
The others (hostile bodies, path parameters, queries and headers, odd framing on a raw socket)
never get a 5xx, a traceback or a secret. It prints the same tally, with the statuses answered.
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from yarl import URL

from comfy_lora_cloud.comfy.routes import PREFIX
from comfy_lora_cloud.comfy.token import HEADER
from comfy_lora_cloud.storage import layout

from tests.comfy import fuzz, hostile
from tests.comfy.conftest import SECRETS, png_bytes, token_headers
from tests.comfy.vast_helpers import provider_factory_for, vast  # noqa: F401
from tests.fakes.comfyui import FakeComfyUI

A = PREFIX
GET_ROUTES = ["/token", "/instances", "/instances?all=1", "/instances/77/logs", "/costs", "/budgets", "/runs",
              "/runs/run-1", "/runs/run-1/events", "/runs/run-1/samples", "/runs/run-1/samples/s_0250.png",
              "/datasets", "/datasets/cats/images", "/datasets/cats/captions", "/datasets/cats/images/001.png",
              "/datasets/cats/thumbs/001.png", "/loras", "/loras/cat-v1/metadata",
              # the dashboard's editors
              "/datasets/cats/editor", "/datasets/cats/validate", "/uploads/cats", "/uploads/cats/review",
              "/uploads/cats/files/a.png", "/train/presets", "/runs/run-1/config", "/notify",
              # the Generate section
              "/sessions", "/outputs", "/outputs/session-1/a.png", "/templates/basic_txt2img"]
MUTATIONS = [("POST", "/instances/77/stop", {}), ("POST", "/instances/77/destroy", {}),
             ("POST", "/budgets", {"max_dph": 0.5}), ("POST", "/runs", {"dataset": "cats"}),
             ("POST", "/runs/run-1/stop", {}), ("DELETE", "/datasets/cats", {}),
             ("POST", "/loras/cat-v1/download", {}), ("DELETE", "/loras/cat-v1", {}),
             ("PUT", "/datasets/cats/captions/001.png", {"caption": "x", "generation": "0"}),
             ("PUT", "/uploads/cats/files/a.png", {}), ("DELETE", "/uploads/cats/files/a.png", {}),
             ("DELETE", "/uploads/cats", {}), ("POST", "/uploads/cats/prepare", {}),
             ("POST", "/uploads/cats/publish", {}), ("POST", "/train/check", {}),
             ("POST", "/notify/settings", {"notify_toast": False}), ("POST", "/notify/test", {}),
             ("POST", "/sessions", {}), ("POST", "/sessions/session-1/stop", {}),
             ("POST", "/sessions/session-1/open", {})]
# every route with a parameter; {} is where the hostile value goes
PARAM_ROUTES = [("GET", "/runs/{}"), ("GET", "/runs/{}/events"), ("GET", "/runs/{}/samples"),
                ("GET", "/runs/run-1/samples/{}"), ("GET", "/datasets/{}/images"), ("GET", "/datasets/{}/captions"),
                ("GET", "/datasets/cats/images/{}"), ("GET", "/datasets/cats/thumbs/{}"),
                ("GET", "/loras/{}/metadata"), ("GET", "/instances/{}/logs"), ("POST", "/instances/{}/stop"),
                ("POST", "/instances/{}/destroy"), ("POST", "/runs/{}/stop"), ("DELETE", "/datasets/{}"),
                ("POST", "/loras/{}/download"), ("DELETE", "/loras/{}"),
                ("GET", "/datasets/{}/editor"), ("GET", "/datasets/{}/validate"), ("PUT", "/datasets/cats/captions/{}"),
                ("GET", "/uploads/{}"), ("GET", "/uploads/{}/review"), ("GET", "/uploads/cats/files/{}"),
                ("GET", "/uploads/cats/prepared/{}"), ("DELETE", "/uploads/{}"), ("DELETE", "/uploads/cats/files/{}"),
                ("POST", "/uploads/{}/prepare"), ("POST", "/uploads/{}/publish"), ("GET", "/runs/{}/config"),
                ("GET", "/outputs/{}/a.png"), ("GET", "/outputs/session-1/{}"), ("GET", "/templates/{}"),
                ("POST", "/sessions/{}/stop"), ("POST", "/sessions/{}/open")]
TRICKS = ["..", "%2e%2e", "..%2F..%2Fetc", "%2E%2E%2F%2E%2E%2Fstatus.json", ".hidden", "a%00b", "a%0Ab",
          "%252e%252e%252f", "%2Fetc%2Fpasswd", "a%5C..%5Cb", "%20lead", "x" * 300, "caf%E2%80%8Be",
          "%C0%AE%C0%AE%2F", "run-1%2F..%2F..%2Fdatasets", "cat-v1%2F..%2F..%2Fruns"]
ACTIVE_TYPES = ("text/html", "image/svg", "xml", "javascript", "text/plain")
GUARD_ERRORS = {"ForeignHost", "CrossOrigin", "BadToken", "UnsupportedMediaType", "RequestTooLarge"}

Check = Callable[[int, dict[str, str], bytes], "str | None"]
CANARIES = [*SECRETS.values(), "sa-private-key-material-42"]


@dataclass
class Tally:
    tried: int = 0
    by_category: collections.Counter = field(default_factory=collections.Counter)
    accepted: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    statuses: collections.Counter = field(default_factory=collections.Counter)

    def summary(self) -> str:
        lines = [f"hostile requests tried: {self.tried}",
                 f"wrongly accepted: {len(self.accepted)} (must be 0)",
                 f"5xx answers: {len(self.server_errors)} (must be 0)",
                 f"other failures: {len(self.other)} (must be 0)",
                 "by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_category.items())),
                 "answered: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.statuses.items()))]
        for name, items in (("accepted", self.accepted), ("5xx", self.server_errors), ("other", self.other)):
            lines += [f"  {name}: {item}" for item in items[:30]]
        return "\n".join(lines)


def refused(*errors: str, statuses: tuple[int, ...] = (400, 403, 404, 405, 413, 415, 422)) -> Check:
    """A refusal: an error status (one of ``statuses``), with one of ``errors`` when given."""
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status < 400:
            return "ACCEPTED"
        if status not in statuses:
            return f"status {status}"
        if errors:
            try:
                kind = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                return f"not a JSON error: {body[:80]!r}"
            if kind not in errors:
                return f"error {kind}, wanted {'/'.join(errors)}"
        return None
    return check


def served_safely(image: bool) -> Check:
    """A bucket file as the browser may get it: never an active type; sandboxed; an attachment
    unless its bytes are an allowlisted image."""
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        ctype = headers.get("Content-Type", "").lower()
        if status != 200:
            return f"status {status}"
        if any(t in ctype for t in ACTIVE_TYPES):
            return f"ACCEPTED as {ctype}"
        if headers.get("X-Content-Type-Options") != "nosniff":
            return "ACCEPTED without nosniff"
        if image != ctype.startswith("image/"):
            return f"content type {ctype}"
        if not image and not (headers.get("Content-Disposition", "").startswith("attachment")
                              and "sandbox" in headers.get("Content-Security-Policy", "")):
            return "ACCEPTED inline (no attachment or no CSP sandbox)"
        return None
    return check


def listing(key: str, must_list: set[str], must_report: set[str], name_field: str = "name") -> Check:
    """A listing over hostile content: 200, the good entries still there, the bad ones reported."""
    def check(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"ACCEPTED-FAILURE: listing answered {status}"
        data = json.loads(body)
        items = data[key]
        names = {i if isinstance(i, str) else i[name_field] for i in items}
        reported = {p["entry"] for p in data["problems"]}
        if not must_list <= names:
            return f"missing {sorted(must_list - names)}"
        if not must_report <= reported:
            return f"not reported {sorted(must_report - reported)}"
        return None
    return check


def config_answered(status: int, headers: dict[str, str], body: bytes) -> str | None:
    """A run config whose spec parses but holds odd values: answered (a problem named where it
    cannot be resolved), never a 500."""
    if status != 200:
        return f"status {status}"
    return None if isinstance(json.loads(body).get("config"), dict) else "no config"


def config_problem(status: int, headers: dict[str, str], body: bytes) -> str | None:
    """A run config whose spec.json is damaged: answered with the problem named, so the sidebar
    shows what is wrong with that run instead of failing the request."""
    if status != 200:
        return f"status {status}"
    problem = (json.loads(body).get("config") or {}).get("problem")
    return None if isinstance(problem, str) and problem else "no problem named"


def not_5xx(status: int, headers: dict[str, str], body: bytes) -> str | None:
    return None


class Attacker:
    def __init__(self, client: Any, token: str):
        self.client, self.token, self.tally = client, token, Tally()
        self.port = client.server.port
        self.base = f"http://127.0.0.1:{self.port}"

    def good(self, method: str) -> dict[str, str]:
        return {HEADER: self.token, "Content-Type": "application/json"} if method != "GET" else {}

    async def send(self, category: str, method: str, path: str, check: Check, *, headers: dict[str, str] | None = None,
                   body: Any = None) -> None:
        url = URL(self.base + path, encoded=True)  # raw: the client must not normalise the tricks away
        resp = await self.client.session.request(method, url, headers=headers or {}, data=body)
        data = await resp.read()
        hdrs = {k: v for k, v in resp.headers.items()}
        resp.release()
        self.record(category, f"{category}: {method} {path[:90]} {json.dumps(headers or {})[:120]}",
                    resp.status, hdrs, data, check, path)

    async def send_plan(self, plan: fuzz.Plan) -> None:
        check = refused(statuses=(400, 403, 404, 405, 413, 415)) if plan.must_refuse else not_5xx
        what = (f"{plan.category}: {plan.method} {plan.path[:100]} [{plan.note}] "
                f"{json.dumps({k: v[:60] for k, v in plan.headers.items() if k != HEADER})[:160]}")
        url = URL(self.base + plan.path, encoded=True)
        async with self.client.session.request(plan.method, url, headers=plan.headers, data=plan.body,
                                               skip_auto_headers=("Content-Type",)) as resp:
            data = await resp.read()
            self.record(plan.category, what, resp.status, dict(resp.headers), data, check, plan.path)

    async def _raw(self, request: str) -> tuple[int, bytes]:
        """Bytes on a socket, for what an HTTP client will not send; (status, body), a connection
        closed unanswered counting as a 400 (refused)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(request.encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        head, _, data = raw.partition(b"\r\n\r\n")
        return (int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 400), data

    async def send_raw(self, category: str, request: str) -> None:
        """A raw request that must be refused (no Host, two Hosts)."""
        status, data = await self._raw(request)
        self.record(category, f"{category}: raw {request[:80]!r}", status, {}, data,
                    refused(statuses=(400, 403)), "/token")

    async def send_raw_checked(self, category: str, request: str) -> None:
        """A raw request answered by anything but a 5xx (the server may take or refuse it)."""
        status, data = await self._raw(request)
        self.record(category, f"{category}: raw {request[-90:]!r}", status, {}, data, not_5xx, A + "/budgets")

    def record(self, category: str, what: str, status: int, hdrs: dict[str, str], data: bytes, check: Check,
               path: str) -> None:
        self.tally.tried += 1
        self.tally.by_category[category] += 1
        self.tally.statuses[status] += 1
        if status >= 500:
            self.tally.server_errors.append(f"{what} -> {status}")
        elif self.token.encode() in data and not (status == 200 and path.split("?")[0].endswith(f"{A}/token")):
            self.tally.accepted.append(f"{what} -> token leaked")
        elif any(secret.encode() in data for secret in CANARIES):
            self.tally.accepted.append(f"{what} -> a secret in the answer")
        elif b"Traceback" in data or b'File "/' in data:
            self.tally.accepted.append(f"{what} -> a traceback in the answer")
        elif (verdict := check(status, hdrs, data)) is not None:
            (self.tally.accepted if verdict.startswith("ACCEPTED") else self.tally.other).append(f"{what} -> {verdict}")


async def _boundary(att: Attacker) -> None:
    port = att.port
    foreign_hosts = [f"rebind.evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}",
                     f"localhost.evil.example:{port}"]
    routes = [("GET", r, None) for r in GET_ROUTES] + MUTATIONS
    for prefix in ("", "/api"):
        for method, route, body in routes:
            for host in foreign_hosts:
                await att.send("foreign Host", method, prefix + A + route, refused("ForeignHost", statuses=(403,)),
                               headers={**att.good(method), "Host": host},
                               body=None if body is None else json.dumps(body).encode())
    foreign_origins = ["http://evil.example", "null", "http://127.0.0.1", f"https://127.0.0.1:{port}",
                       f"http://127.0.0.1:{port + 1}", f"http://localhost:{port}", f"http://127.0.0.1:{port}.evil.example",
                       f"http://127.0.0.1:{port}/lora_cloud", "file://", f"http://user@127.0.0.1:{port}"]
    for method, route, body in routes:
        for origin in foreign_origins:
            await att.send("foreign Origin", method, "/api" + A + route, refused("CrossOrigin", statuses=(403,)),
                           headers={**att.good(method), "Origin": origin},
                           body=None if body is None else json.dumps(body).encode())
    for route in GET_ROUTES:
        for site in ("cross-site", "same-site"):
            await att.send("cross-site fetch", "GET", A + route, refused("CrossOrigin", statuses=(403,)),
                           headers={"Sec-Fetch-Site": site})
    # the token: malformed and foreign Hosts, foreign origins and fetch metadata, HEAD too
    bad_hosts = ["", "[::1", f"127.0.0.1:{port}:{port}", "127.0.0.1:99999", "127.0.0.1 evil.example",
                 f"evil.example@127.0.0.1:{port}", f"127.0.0.1%2e:{port}", f"127.1:{port}", "0x7f.0.0.1",
                 f"rebind.evil.example.:{port}", f"[::ffff:7f00:1]x:{port}"]
    for host in bad_hosts:
        await att.send("token fetch", "GET", A + "/token", refused("ForeignHost", statuses=(403,)),
                       headers={"Host": host})
        await att.send("token fetch", "HEAD", A + "/token", refused(statuses=(403,)), headers={"Host": host})
    await att.send_raw("token fetch", f"GET {A}/token HTTP/1.0\r\n\r\n")  # no Host at all
    await att.send_raw("token fetch", f"GET {A}/token HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1\r\n\r\n")
    for headers in ({"Origin": "http://evil.example", "Host": f"evil.example:{port}"},
                    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": f"http://127.0.0.1:{port}", "Host": f"rebind.evil.example:{port}"},
                    {"Referer": "http://evil.example/", "Sec-Fetch-Site": "same-site"}):
        await att.send("token fetch", "GET", "/api" + A + "/token", refused(statuses=(403,)), headers=headers)


async def _params(att: Attacker) -> None:
    for method, template in PARAM_ROUTES:
        for trick in TRICKS:
            body = b"{}" if method != "GET" else None
            await att.send("path trick", method, A + template.format(trick),
                           refused(statuses=(400, 404, 405, 422)), headers=att.good(method), body=body)
    queries = ["/runs?limit=1e3", "/runs?limit=-1", "/runs?limit=0x10", "/runs?limit=%EF%BC%91%EF%BC%92",
               "/runs?limit=1_0", "/runs?limit=%2012", "/runs?limit=99999999999999999999", "/runs?limit=",
               "/runs/run-1/events?since=-1", "/runs/run-1/events?since=abc", "/runs/run-1/events?since=1.5",
               "/instances/77/logs?tail=0", "/instances/77/logs?tail=9999999", "/datasets/cats/thumbs/001.png?size=5000",
               "/datasets/cats/thumbs/001.png?size=64.0", "/datasets/cats/thumbs/001.png?size=-64",
               "/datasets/cats/thumbs/001.png?size=%D9%A6%D9%A4"]
    for q in queries:
        await att.send("query trick", "GET", A + q, refused("ConfigError", statuses=(400,)))


def _nested(depth: int) -> dict[str, Any]:
    body: dict[str, Any] = {"max_dph": 1}
    for _ in range(depth):
        body = {"max_dph": body}
    return body


async def _bodies(att: Attacker) -> None:
    good = att.good("POST")
    big = b'{"max_dph": 1, "pad": "' + b"x" * (200 * 1024) + b'"}'

    async def chunks():
        for _ in range(40):
            yield b" " * 8192
        yield b"{}"

    cases: list[tuple[str, bytes | Any, dict[str, str], tuple[str, ...]]] = [
        ("/budgets", big, good, ("RequestTooLarge",)),
        ("/runs", b"[" * 100_000 + b"]" * 100_000, good, ("RequestTooLarge", "ConfigError")),
        ("/budgets", hostile.deep_json(5_000).encode(), good, ("ConfigError",)),
        ("/budgets", json.dumps(_nested(17)).encode(), good, ("ConfigError",)),
        ("/budgets", b'{"max_dph": "\xff\xfe"}', good, ("ConfigError",)),
        ("/budgets", b'{"max_dph": NaN}', good, ("ConfigError",)),
        ("/budgets", b'{"max_dph": Infinity}', good, ("ConfigError",)),
        ("/budgets", b'{"max_dph": 1e999}', good, ("ConfigError",)),
        ("/budgets", b'{"max_dph": ' + b"9" * 5000 + b"}", good, ("ConfigError",)),
        ("/budgets", b"[]", good, ("ConfigError",)),
        ("/budgets", b'"max_dph"', good, ("ConfigError",)),
        ("/budgets", b"{", good, ("ConfigError",)),
        ("/budgets", b'{"max_dph": 1}', {HEADER: att.token, "Content-Type": "text/plain"}, ("UnsupportedMediaType",)),
        ("/budgets", b"max_dph=1", {HEADER: att.token, "Content-Type": "application/x-www-form-urlencoded"},
         ("UnsupportedMediaType",)),
        ("/budgets", b'{"max_dph": 1}', {HEADER: att.token, "Content-Type": "application/json-patch+json"},
         ("UnsupportedMediaType",)),
        ("/budgets", b'{"max_dph": 1}', {"Content-Type": "application/json", HEADER: "x" * 43}, ("BadToken",)),
        ("/budgets", b'{"max_dph": 1}', {"Content-Type": "application/json", HEADER: ""}, ("BadToken",)),
        ("/budgets", b'{"max_dph": 1}', {"Content-Type": "application/json", HEADER: att.token[:-1]}, ("BadToken",)),
        ("/runs", json.dumps({"dataset": "cats", "interruptible": "no"}).encode(), good, ("ConfigError",)),
        ("/runs", json.dumps({"dataset": "cats", "interruptible": 0}).encode(), good, ("ConfigError",)),
        ("/runs", json.dumps({"dataset": "cats", "interruptible": None}).encode(), good, ("ConfigError",)),
        ("/runs", json.dumps({"dataset": "cats", "evil": True}).encode(), good, ("ConfigError",)),
        ("/runs", json.dumps({"dataset": ["cats"]}).encode(), good, ("ConfigError",)),
        ("/runs", json.dumps({"dataset": "../datasets/cats"}).encode(), good, ("ConfigError",)),
        ("/runs", json.dumps({"dataset": "cats", "gpu": {"name": "4090"}}).encode(), good, ("ConfigError",)),
        ("/runs", json.dumps({"dataset": "cats", "lora_type": "<script>"}).encode(), good, ("ConfigError",)),
        ("/runs", json.dumps({"dataset": "cats", "provider": "aws"}).encode(), good, ("ConfigError",)),
        ("/budgets", json.dumps({"vast_api_key": "x", "max_dph": 1}).encode(), good, ("ConfigError",)),
        ("/budgets", json.dumps({"max_dph": True}).encode(), good, ("ConfigError",)),
    ]
    # integers too big for a float, wherever a route takes a number: a 400, not an OverflowError
    big = hostile.BIG_INT
    cases += [(route, body.replace("BIG", big).encode(), good, ("ConfigError",)) for route, body in (
        ("/budgets", '{"max_dph": BIG}'), ("/budgets", '{"max_month_usd": -BIG}'),
        ("/train/check", '{"dataset": "cats", "config": {"steps": BIG}}'),
        ("/train/check", '{"dataset": "cats", "config": {"rank": BIG, "learning_rate": 1e-4}}'),
        ("/runs", '{"dataset": "cats", "max_dph": BIG}'), ("/runs", '{"dataset": "cats", "config": {"steps": BIG}}'),
        ("/sessions", '{"max_hours": BIG}'), ("/sessions", '{"max_dph": BIG}'),
        ("/notify/settings", '{"notify_toast": BIG}'))]
    for route, body, headers, errors in cases:
        await att.send("body", "POST", A + route, refused(*errors), headers=headers, body=body)
    # the server stops reading such a body: the connection is not reused after it
    await att.send("body", "POST", A + "/budgets", refused("RequestTooLarge"),
                   headers={**good, "Connection": "close"}, body=chunks())
    await att.send("body", "POST", A + "/budgets", refused("RequestTooLarge"),
                   headers={**good, "Content-Length": str(10**12), "Connection": "close"}, body=b"{}")


async def _bucket_content(att: Attacker) -> None:
    for prefix in ("", "/api"):
        await att.send("hostile bucket", "GET", prefix + A + "/datasets", listing(
            "datasets", {"cats", *hostile.BAD_MANIFESTS},
            {f"datasets/{n}/" for n in hostile.BAD_DATASET_NAMES}
            | {f"datasets/{n}/dataset.json" for n in hostile.BAD_MANIFESTS}))
        await att.send("hostile bucket", "GET", prefix + A + "/runs", listing(
            "runs", {"run-1"}, {f"runs/{n}/status.json" for n in hostile.BAD_STATUSES}
            | {f"runs/{p}/" for p in hostile.BAD_RUN_PREFIXES if p != ".."}, name_field="id"))
        await att.send("hostile bucket", "GET", prefix + A + "/loras", listing(
            "loras", {"cat-v1", "side-list"},
            {"loras/<script>.safetensors", "loras/bad name!.safetensors", "loras/side-list.json"}))
        await att.send("hostile bucket", "GET", prefix + A + "/runs/run-1/samples", listing(
            "samples", {"s_0250.png"}, {f"runs/run-1/samples/{n}" for n in hostile.SAMPLE_FILES}
            | {"runs/run-1/samples/nested/deeper.png"}))
    for name in hostile.SAMPLE_FILES:
        await att.send("hostile bucket", "GET", A + f"/runs/run-1/samples/{name}", served_safely(image=False))
    await att.send("hostile bucket", "GET", A + "/runs/run-1/samples/s_0250.png", served_safely(image=True))
    await att.send("hostile bucket", "GET", A + "/datasets/cats/images/page.png", served_safely(image=False))
    for bomb in ("bomb20k.png", "bomb12k.png", "bomb.jpg", "bomb.gif", "page.png"):
        for size in (64, 512):
            await att.send("image bomb", "GET", A + f"/datasets/cats/thumbs/{bomb}?size={size}",
                           refused("DatasetError", statuses=(422,)))
    for lora in ("deep-header", "huge-header", "side-list"):
        await att.send("hostile bucket", "GET", A + f"/loras/{lora}/metadata", refused("DatasetError", statuses=(422,)))
    for run_id in hostile.BAD_STATUSES:
        for route in (f"/runs/{run_id}", f"/runs/{run_id}/samples", f"/runs/{run_id}/events"):
            await att.send("hostile bucket", "GET", A + route, not_5xx)
    for run_id in hostile.BAD_SPECS:  # a damaged spec.json is a damaged record, never a 500
        await att.send("hostile bucket", "GET", A + f"/runs/{run_id}/config", config_problem)
    for run_id in hostile.ODD_SPECS:
        await att.send("hostile bucket", "GET", A + f"/runs/{run_id}/config", config_answered)
    for route in ("/datasets/ds-deep/images", "/datasets/cats/images", "/datasets/cats/captions",
                  "/runs/run-1/events", "/runs/run-1", "/instances", "/costs"):
        await att.send("hostile bucket", "GET", A + route, not_5xx)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_hostile_requests_are_all_refused(comfy_client, seeded, capsys):
    hostile.write_hostile_bucket(seeded.storage.root)
    hostile.write_hostile_specs(seeded.storage.root)
    token = (await token_headers(comfy_client))[HEADER]
    att = Attacker(comfy_client, token)
    for phase in (_boundary, _params, _bodies, _bucket_content):
        await phase(att)
    with capsys.disabled():
        print("\n" + att.tally.summary())
    assert att.tally.tried >= 150
    assert att.tally.accepted == [] and att.tally.server_errors == [] and att.tally.other == [], att.tally.summary()

    # nothing happened
    assert seeded.storage.exists("datasets/cats/001.png") and seeded.storage.exists(layout.lora_key("cat-v1"))
    assert not (seeded.settings.home / "config.toml").exists()
    assert [r.id for r in seeded.state.list_runs()] == ["run-1"]
    assert [(i["id"], i["state"]) for i in seeded.state.list_instances()] == [("77", "running")]
    assert not seeded.loras_dir.exists()
    assert seeded.app.library.thumbnails.made == 0  # no bomb was ever decoded

    # and the same requests, made right, still work (a guard that refuses everything passes nothing)
    port = comfy_client.server.port
    for headers in ({}, {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
                    {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}, {"Host": "127.0.0.1"},
                    {"Host": f"[::1]:{port}"}, {"Host": f"app.localhost:{port}"}, {"Sec-Fetch-Site": "none"}):
        for route in GET_ROUTES[:3] + ["/runs", "/datasets"]:
            resp = await comfy_client.get("/api" + A + route, headers=headers)
            assert resp.status == 200, (route, headers, await resp.text())
    resp = await comfy_client.post(f"{A}/budgets", json={"max_dph": 1.5},
                                   headers={**await token_headers(comfy_client), "Origin": f"http://127.0.0.1:{port}"})
    assert resp.status == 200 and (await resp.json())["max_dph"] == 1.5


# ---- the seeded fuzz of every route --------------------------------------------------------------
def _raw_requests(port: int, token: str) -> list[str]:
    """What an HTTP client will not send: odd and contradictory Content-Length and framing, on a
    mutating route with the real token (the server must answer 4xx or take the body, never 5xx)."""
    head = f"POST {A}/budgets HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n" \
           f"{HEADER}: {token}\r\nConnection: close\r\n"
    body = '{"max_dph": 0.5}'
    return [head + f"Content-Length: {length}\r\n\r\n{body}" for length in ("-1", "abc", "1e3", " 16", "0x10",
                                                                               "+16", "16, 16", "3", "")] + [
        head + f"Content-Length: 16\r\nContent-Length: 17\r\n\r\n{body}",
        head + f"Transfer-Encoding: chunked\r\nContent-Length: 16\r\n\r\n{body}",
        head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        head + "Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        head + "X-Big: " + "h" * 20_000 + "\r\nContent-Length: 2\r\n\r\n{}",
        head.replace("Host: 127.0.0.1", "Host: \u00e9vil.example") + "Content-Length: 2\r\n\r\n{}",
    ]


def _home_snapshot(seeded) -> dict[str, Any]:
    """Everything a request could change: the bucket's objects, the settings files, the staged
    uploads, the runs, instances and costs recorded, the LoRAs downloaded."""
    home = seeded.settings.home
    return {
        "bucket": sorted((o.key, o.size) for o in seeded.storage.list("").objects),
        "home": sorted((str(p.relative_to(home)), p.stat().st_size) for p in home.rglob("*")
                       if p.is_file() and p.suffix in (".toml", ".png", ".jpg", ".txt", ".json")),
        "runs": [(r.id, r.state.value) for r in seeded.state.list_runs()],
        "instances": [(i["id"], i["state"]) for i in seeded.state.list_instances()],
        "loras": sorted(p.name for p in seeded.loras_dir.rglob("*")) if seeded.loras_dir.exists() else [],
    }


@pytest.fixture
async def fuzz_target(comfy_client, seeded, vast, aiohttp_server, tmp_path):  # noqa: F811
    """The routes as ComfyUI mounts them, over the fake vast.ai (with no offers: nothing the fuzz
    sends can rent a GPU) and a fake ComfyUI (a LoRA test queues there)."""
    fake_vast, _clock = vast
    fake_vast.state.offers.clear()
    seeded.app.providers["vast"] = provider_factory_for(fake_vast)
    comfy = await aiohttp_server(FakeComfyUI(tmp_path / "comfy-out").app())
    seeded.app.templates.local_url = str(comfy.make_url("")).rstrip("/")
    seeded.app.uploads.workers = 1
    hostile.write_hostile_bucket(seeded.storage.root)
    hostile.write_hostile_specs(seeded.storage.root)
    # something for the upload steps and the run config to work on, not only a 404
    for i in range(3):
        await seeded.app.uploads.put("cats", f"00{i}.png", png_bytes((40 * i, 90, 160)))
    spec = {"run_id": "run-1", "dataset": "cats", "lora_type": "character", "vram_gb": 24.0,
            "overrides": {"network_dim": 32}}
    seeded.storage.write_bytes(layout.run_key("run-1", "spec.json"), json.dumps(spec).encode())
    return comfy_client


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_seeded_fuzz_of_every_route(fuzz_target, seeded, capsys):
    client = fuzz_target
    token = (await token_headers(client))[HEADER]
    att = Attacker(client, token)
    plans = fuzz.plans(att.port, token, HEADER, png_bytes((90, 120, 30), (64, 64)))
    covered = collections.Counter(p.route for p in plans)
    assert set(covered) == {r for r in fuzz.route_table() if r[0] != "HEAD"}
    assert min(covered.values()) >= 20 and sum(p.must_refuse for p in plans) >= 300
    # the refusals first: refused means nothing happened, so the home must be as it was after them
    before = _home_snapshot(seeded)
    for plan in plans:
        if plan.must_refuse:
            await att.send_plan(plan)
    assert _home_snapshot(seeded) == before, "a refused request changed something"
    for plan in plans:
        if not plan.must_refuse:
            await att.send_plan(plan)
    for raw in _raw_requests(att.port, token):
        await att.send_raw_checked("fuzz: framing", raw)
    with capsys.disabled():
        print(f"\nseeded fuzz of {len(covered)} routes (seed {fuzz.SEED}):\n" + att.tally.summary())
    assert att.tally.tried >= 1500
    assert att.tally.accepted == [] and att.tally.server_errors == [] and att.tally.other == [], att.tally.summary()
