"""Downloads at least as fast as gcsfs: a download's GET goes straight on the
authorised session's connection pool, not through requests' per-call machinery, with the same
credentials, retries and checksum checks; where the session would do more (a proxy, an adapter
of its own) the session sends it. And a sync of small files keeps more requests in flight: many
at once on one event loop (``GcsStorage.fetch_many``), whatever that did not land the careful way.

The emulator ignores credentials and never drops a connection, so :class:`Gate`, a small HTTP
server in front of it, refuses a stale token with 401 and cuts chosen bodies short; it also
serves as an HTTP proxy. The bytes themselves come from the emulator."""

from __future__ import annotations

import http.server
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from google.auth import credentials

from comfy_lora_cloud.storage import sync
from comfy_lora_cloud.storage.gcs import GcsStorage
from comfy_lora_cloud.storage.gcs_errors import make_retry
from comfy_lora_cloud.storage.local import LocalStorage

FAST_RETRY = dict(initial=0.001, maximum=0.01, timeout=10)


class Gate:
    """Forwards GETs to the emulator. A request without ``Authorization: Bearer <token>``
    gets 401; each name in ``cut`` gets half its body once and a closed connection. Absolute
    request targets (``GET http://host/path``, as sent to a proxy) are served too and noted."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.token = "fresh"
        self.cut: set[str] = set()
        self.corrupt: set[str] = set()  # names whose next answer has one byte flipped
        self.connections = 0
        self.media_connections: set[int] = set()  # the connections that carried a download
        self.seen: list[tuple[str, str, bool]] = []  # (path, authorization, through a proxy)
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                gate.connections += 1
                self.number = gate.connections
                super().setup()

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                proxied = self.path.startswith("http://")
                path = "/" + self.path.split("/", 3)[3] if proxied else self.path
                auth = self.headers.get("Authorization", "")
                gate.seen.append((path, auth, proxied))
                if "alt=media" in path:
                    gate.media_connections.add(self.number)
                if auth != f"Bearer {gate.token}":
                    self._reply(401, {}, b'{"error": {"code": 401}}')
                    return
                try:
                    with urllib.request.urlopen(gate.upstream + path) as r:
                        status, headers, body = r.status, dict(r.headers), r.read()
                except urllib.error.HTTPError as e:
                    status, headers, body = e.code, dict(e.headers), e.read()
                name = urllib.parse.unquote(path.split("?")[0].rsplit("/", 1)[-1]).rsplit("/", 1)[-1]
                if name in gate.cut:
                    gate.cut.discard(name)
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                if name in gate.corrupt and status == 200:
                    gate.corrupt.discard(name)
                    body = bytes([body[0] ^ 1]) + body[1:]
                keep = {k: v for k, v in headers.items() if k.lower().startswith("x-goog-")}
                self._reply(status, keep, body)

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Gate":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Token(credentials.Credentials):
    """A bearer token that a refresh replaces (what a service account's token does)."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token
        self.refreshes = 0

    def refresh(self, request: object) -> None:
        self.refreshes += 1
        self.token = "fresh"


@pytest.fixture
def stored(gcs_env, gcs_bucket):
    """Three objects written through the emulator; returns (bucket, {key: bytes})."""
    writer = GcsStorage(gcs_bucket, "pre", client=gcs_env.client(), retry=make_retry(**FAST_RETRY))
    objects = {f"d/{i}.bin": os.urandom(70_000 + i) for i in range(3)}
    for key, data in objects.items():
        writer.write_bytes(key, data)
    return gcs_bucket, objects


def gated(gate: Gate, bucket: str, creds: credentials.Credentials) -> GcsStorage:
    from google.cloud import storage

    client = storage.Client(project="p", credentials=creds, client_options={"api_endpoint": gate.url})
    return GcsStorage(bucket, "pre", client=client, retry=make_retry(**FAST_RETRY))


def test_downloads_skip_requests_per_call_machinery(gcs_env, stored, tmp_path, monkeypatch):
    """The authorised session's ``request`` is never called for a download (listing: yes)."""
    import requests

    bucket, objects = stored
    calls: list[str] = []
    real = requests.Session.request

    def counting(self, method, url, *a, **kw):
        calls.append(url)
        return real(self, method, url, *a, **kw)

    monkeypatch.setattr(requests.Session, "request", counting)
    s = GcsStorage(bucket, "pre", client=gcs_env.client(), retry=make_retry(**FAST_RETRY))
    result = sync.pull(s, "d/", tmp_path / "out", workers=2)
    assert result.files == 3
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == {
        k.split("/")[1]: v for k, v in objects.items()}
    assert s.read_bytes("d/0.bin") == objects["d/0.bin"]
    assert [u for u in calls if "alt=media" in u] == []
    assert any("/o?" in u or u.endswith("/o") for u in calls)  # the listing went through the session


def test_a_refused_token_is_refreshed_once_and_the_get_repeated(gcs_emulator, stored, tmp_path):
    bucket, objects = stored
    with Gate(gcs_emulator.url) as gate:
        creds = Token("stale")
        s = gated(gate, bucket, creds)
        assert s.read_bytes("d/1.bin") == objects["d/1.bin"]
        assert creds.refreshes == 1
        assert [auth for _, auth, _ in gate.seen] == ["Bearer stale", "Bearer fresh"]
        gate.token = "revoked"  # refused again after the refresh: an error, not a loop
        with pytest.raises(Exception, match="denied|401"):
            s.read_bytes("d/1.bin")
        assert creds.refreshes == 2


def test_a_body_cut_short_is_fetched_again_and_lands_whole(gcs_emulator, stored, tmp_path):
    bucket, objects = stored
    with Gate(gcs_emulator.url) as gate:
        s = gated(gate, bucket, Token("fresh"))
        gate.cut = {"0.bin", "2.bin"}
        out = tmp_path / "out"
        sync.pull(s, "d/", out, workers=2)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == {k.split("/")[1]: v for k, v in objects.items()}
        media = [p for p, _, _ in gate.seen if "alt=media" in p]
        assert len(media) == 5  # three files, two of them twice
        assert not gate.cut


@pytest.fixture
def behind_proxy(gcs_emulator, stored, monkeypatch):
    """(storage, proxy, objects): ``HTTP_PROXY`` names a :class:`Gate`, the API a host that only
    the proxy can reach."""
    bucket, objects = stored
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with Gate(gcs_emulator.url) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        from google.cloud import storage

        client = storage.Client(project="p", credentials=Token("fresh"),
                                client_options={"api_endpoint": "http://gcs.invalid"})
        yield GcsStorage(bucket, "pre", client=client, retry=make_retry(**FAST_RETRY)), proxy, objects


def test_a_configured_proxy_is_honoured(behind_proxy):
    """With HTTP_PROXY set the session sends the GET (to the proxy), as requests would."""
    s, proxy, objects = behind_proxy
    assert s.read_bytes("d/2.bin") == objects["d/2.bin"]
    assert [(p.split("?")[0], proxied) for p, _, proxied in proxy.seen] == [
        (f"/download/storage/v1/b/{s.bucket_name}/o/pre%2Fd%2F2.bin", True)]


class InFlight(LocalStorage):
    """Counts transfers running at once; ``meet`` holds each small download until that many
    are inside together (proof that they overlap, with no timing involved)."""

    def __init__(self, root: Path, meet: int | None, max_parallel: int):
        super().__init__(root)
        self.max_parallel = max_parallel
        self.meet = threading.Barrier(meet) if meet else None
        self._lock = threading.Lock()
        self.now = {True: 0, False: 0}
        self.most = {True: 0, False: 0}  # large, small

    def download_file(self, key, path, **kw):
        large = self.stat(key).size >= sync.SMALL_FILE
        with self._lock:
            self.now[large] += 1
            self.most[large] = max(self.most[large], self.now[large])
        try:
            if not large and self.meet is not None:
                self.meet.wait(timeout=30)
            return super().download_file(key, path, **kw)
        finally:
            with self._lock:
                self.now[large] -= 1


def test_small_files_go_several_times_workers_at_once_large_ones_at_workers(tmp_path):
    store = InFlight(tmp_path / "bucket", meet=8, max_parallel=64)
    for i in range(16):
        store.write_bytes(f"d/s{i:02}", b"x" * 100)
    for i in range(3):
        store.write_bytes(f"d/l{i}", os.urandom(sync.SMALL_FILE))
    result = sync.pull(store, "d/", tmp_path / "out", workers=2)
    assert result.files == 19  # the barrier was met: 8 small downloads at once with 2 workers
    assert store.most[True] <= 2  # large files never more than ``workers`` at once
    assert store.most[False] <= 2 * sync.SMALL_FANOUT

    capped = InFlight(tmp_path / "bucket", meet=None, max_parallel=3)  # what its connection pool allows
    assert sync.pull(capped, "d/", tmp_path / "out2", workers=2).files == 19
    assert capped.most[False] <= 3 and capped.most[True] <= 2


def test_per_call_work_is_done_once_per_storage(gcs_env, stored, monkeypatch):
    """The API's base URL is worked out once (the client reads the environment each time), and a
    listing's times are the client's own, parsed without it."""
    bucket, objects = stored
    s = GcsStorage(bucket, "pre", client=gcs_env.client(), retry=make_retry(**FAST_RETRY))
    connection = type(s.client._connection)
    asked = []
    real = connection.get_api_base_url_for_mtls
    monkeypatch.setattr(connection, "get_api_base_url_for_mtls", lambda self, *a: asked.append(1) or real(self, *a))
    for key, data in objects.items():
        assert s.read_bytes(key) == data
    assert len(asked) == 1
    listed = s.list("d/").objects
    for o in listed:
        blob = s.client.bucket(bucket).get_blob("pre/" + o.key)
        assert o.updated == blob.updated.timestamp()


def small_objects(gcs_env, bucket: str, n: int) -> dict[str, bytes]:
    writer = GcsStorage(bucket, "pre", client=gcs_env.client(), retry=make_retry(**FAST_RETRY))
    objects = {f"many/{i:02}.bin": os.urandom(1000 + i) for i in range(n)}
    for key, data in objects.items():
        writer.write_bytes(key, data)
    return objects


def pulled(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_a_pull_of_small_files_goes_many_at_once_on_kept_alive_connections(gcs_emulator, gcs_env, gcs_bucket,
                                                                         tmp_path):
    objects = small_objects(gcs_env, gcs_bucket, 24)
    with Gate(gcs_emulator.url) as gate:
        s = gated(gate, gcs_bucket, Token("fresh"))
        cache = sync.HashCache(tmp_path / "hashes.json")
        result = sync.pull(s, "many/", tmp_path / "out", workers=1, cache=cache)
    assert result.files == 24
    assert pulled(tmp_path / "out") == {k.split("/")[1]: v for k, v in objects.items()}
    media = [p for p, _, _ in gate.seen if "alt=media" in p]
    assert len(media) == 24  # each once: nothing fell back to the careful way
    assert len(gate.media_connections) <= sync.BULK_FANOUT  # workers=1: 8 in flight, connections reused
    # the verified checksums are remembered: a second pull hashes nothing and moves nothing
    again = sync.plan_pull(s, "many/", tmp_path / "out", cache=sync.HashCache(tmp_path / "hashes.json"))
    assert again.transfers == [] and len(again.skips) == 24


def test_an_answer_that_fails_its_checksum_is_fetched_again_the_careful_way(gcs_emulator, stored, tmp_path):
    bucket, objects = stored
    with Gate(gcs_emulator.url) as gate:
        s = gated(gate, bucket, Token("fresh"))
        gate.corrupt = {"1.bin"}
        sync.pull(s, "d/", tmp_path / "out", workers=2)
    assert pulled(tmp_path / "out") == {k.split("/")[1]: v for k, v in objects.items()}
    media = [p.split("?")[0].rsplit("%2F", 1)[-1] for p, _, _ in gate.seen if "alt=media" in p]
    assert sorted(media) == ["0.bin", "1.bin", "1.bin", "2.bin"]


def test_a_stale_token_sends_the_pull_the_careful_way_which_refreshes_it(gcs_emulator, stored, tmp_path):
    bucket, objects = stored
    with Gate(gcs_emulator.url) as gate:
        creds = Token("stale")
        s = gated(gate, bucket, creds)
        sync.pull(s, "d/", tmp_path / "out", workers=2)
    assert pulled(tmp_path / "out") == {k.split("/")[1]: v for k, v in objects.items()}
    assert creds.refreshes >= 1
    assert gate.seen[-1][1] == "Bearer fresh"


def test_an_object_larger_than_asked_for_is_handed_back(gcs_env, stored):
    bucket, objects = stored
    s = GcsStorage(bucket, "pre", client=gcs_env.client(), retry=make_retry(**FAST_RETRY))
    landed = []
    keys = sorted(objects)
    assert s.fetch_many(keys, lambda i, data, info: landed.append(i), in_flight=4, max_size=70_000) == [1, 2]
    assert landed == [0]
    assert s.fetch_many(keys, lambda i, data, info: landed.append(i), in_flight=4, max_size=1 << 20) == []
    assert sorted(landed) == [0, 0, 1, 2]


def test_with_a_proxy_every_small_file_goes_through_the_session(behind_proxy, tmp_path):
    s, proxy, objects = behind_proxy
    assert s.fetch_many(sorted(objects), lambda *a: None, in_flight=4, max_size=1 << 20) == [0, 1, 2]
    sync.pull(s, "d/", tmp_path / "out", workers=2)
    assert pulled(tmp_path / "out") == {k.split("/")[1]: v for k, v in objects.items()}
    assert proxy.seen and all(proxied for _, _, proxied in proxy.seen)
