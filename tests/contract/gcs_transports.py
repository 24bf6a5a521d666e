"""HTTP transports injected into the real ``storage.Client`` (its ``_http`` session).

The emulator ignores generation preconditions and pagination and never corrupts data, so these
transports sit between the real client and the emulator to (a) record every request the client
sends, (b) answer some requests themselves (scripted 412/403/503, a paginated listing), and
(c) add the server behaviour the emulator lacks: :class:`GcsSemantics` enforces
``ifGenerationMatch`` the way GCS does and can flip bytes of chosen objects on download.
"""

from __future__ import annotations

import io
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

import requests
from requests.adapters import HTTPAdapter
from urllib3.response import HTTPResponse


@dataclass
class Sent:
    method: str
    url: str
    query: dict[str, str]
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.url).path


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Sent], "Reply | None"]


class InterceptingAdapter(HTTPAdapter):
    """Records each request; ``handler`` may answer it, otherwise it goes to the real server
    and ``after`` may rewrite the reply."""

    def __init__(self, handler: Handler | None = None, after: Callable[[Sent, Reply], Reply] | None = None):
        super().__init__(pool_maxsize=64)
        self.handler = handler
        self.after = after
        self.history: list[Sent] = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):  # type: ignore[override]
        body = request.body or b""
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query))
        sent = Sent(request.method, request.url, query, body, dict(request.headers))
        self.history.append(sent)
        reply = self.handler(sent) if self.handler else None
        if reply is None:
            real = super().send(request, stream=False, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
            reply = Reply(real.status_code, real.content, dict(real.headers))
            if self.after:
                reply = self.after(sent, reply)
        headers = {k: v for k, v in reply.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        headers["Content-Length"] = str(len(reply.body))
        raw = HTTPResponse(body=io.BytesIO(reply.body), headers=headers, status=reply.status,
                           preload_content=False, decode_content=False)
        return self.build_response(request, raw)


def session_with(adapter: InterceptingAdapter) -> requests.Session:
    s = requests.Session()
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def object_name(sent: Sent) -> str | None:
    """The object a request is about: ``name=`` on uploads, the path on JSON/media calls,
    the metadata part of a multipart upload."""
    if "name" in sent.query:
        return sent.query["name"]
    if "/o/" in sent.path:
        return urllib.parse.unquote(sent.path.split("/o/", 1)[1])
    if sent.query.get("uploadType") == "multipart":
        start = sent.body.find(b"\r\n\r\n") + 4
        end = sent.body.find(b"\r\n--", start)
        return json.loads(sent.body[start:end]).get("name")
    if sent.query.get("uploadType") == "resumable" and sent.body:
        return json.loads(sent.body).get("name")
    return None


def bucket_of(sent: Sent) -> str:
    return sent.path.split("/b/", 1)[1].split("/", 1)[0]


class GcsSemantics(InterceptingAdapter):
    """Real-GCS behaviour on top of the emulator: generation preconditions, plus corruption of
    chosen objects' bytes on download (to prove our checks catch it)."""

    def __init__(self, emulator_url: str):
        super().__init__(handler=self._preconditions, after=self._corrupt)
        self.emulator_url = emulator_url
        self.corrupted: set[str] = set()
        self._plain = requests.Session()

    def _current_generation(self, bucket: str, name: str) -> int:
        url = f"{self.emulator_url}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}"
        r = self._plain.get(url)
        return int(r.json()["generation"]) if r.status_code == 200 else 0

    def _preconditions(self, sent: Sent) -> Reply | None:
        pinned = sent.query.get("generation")
        if sent.method == "GET" and pinned is not None:  # a read of one generation: gone once replaced
            name = object_name(sent)
            if name is not None and self._current_generation(bucket_of(sent), name) != int(pinned):
                return Reply(404, json.dumps({"error": {"code": 404, "message": "No such object"}}).encode(),
                             {"Content-Type": "application/json"})
            return None
        wanted = sent.query.get("ifGenerationMatch")
        if wanted is None or sent.method not in ("POST", "DELETE", "PATCH"):
            return None
        name = object_name(sent)
        if name is None:
            return None
        if self._current_generation(bucket_of(sent), name) != int(wanted):
            return Reply(412, json.dumps({"error": {"code": 412, "message": "conditionNotMet"}}).encode(),
                         {"Content-Type": "application/json"})
        return None

    def _corrupt(self, sent: Sent, reply: Reply) -> Reply:
        if sent.method == "GET" and sent.query.get("alt") == "media" and reply.status == 200:
            if object_name(sent) in self.corrupted and reply.body:
                body = bytes([reply.body[0] ^ 0xFF]) + reply.body[1:]
                return Reply(reply.status, body, reply.headers)
        return reply
