"""The fast path for many small GETs (``storage/bulk_get.py``), against a real server on a
real socket: :class:`Scripted` answers each request with what a test's ``answer`` function
returns, as raw bytes, and counts connections and requests. What is asserted is what a caller
relies on: answers whole and exactly as sent, kept-alive connections reused, anything else handed
back by index (never raised), and what ``land`` raises stopping the run."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import threading
from pathlib import Path
from typing import Callable

import pytest

from comfy_lora_cloud.storage import bulk_get
from comfy_lora_cloud.storage.bulk_get import Answer, Origin

#: what ``answer`` returns: raw bytes to send, then whether to close the connection; or None to
#: never answer (a server that hangs)
Reply = "tuple[bytes, bool] | None"


def ok(body: bytes, *extra: str, close: bool = False) -> tuple[bytes, bool]:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body, close


class Scripted:
    """An HTTP server on 127.0.0.1 in a thread of its own (optionally TLS)."""

    def __init__(self, answer: Callable[[str, dict[str, str]], "tuple[bytes, bool] | None"],
                 tls: ssl.SSLContext | None = None):
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "Scripted":
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls), self.loop).result(10)
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def origin(self, tls: ssl.SSLContext | None = None) -> Origin:
        return Origin("https" if tls else "http", "127.0.0.1", self.port, tls)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                self.requests.append((target, headers))
                reply = self.answer(target, headers)
                if reply is None:
                    await asyncio.sleep(3600)
                    return
                data, close = reply
                writer.write(data)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()


def fetch(server: Scripted, targets: list[str], *, origin: Origin | None = None, land=None, **kw) -> tuple[list[int], dict[int, Answer]]:
    kept: dict[int, Answer] = {}

    def keep(i: int, answer: Answer) -> bool:
        kept[i] = answer
        return True

    kw.setdefault("in_flight", 4)
    kw.setdefault("max_body", 1 << 20)
    missed = bulk_get.get_many(origin or server.origin(), targets, headers=lambda: {}, land=land or keep, **kw)
    return missed, kept


def test_answers_arrive_whole_over_kept_alive_connections():
    bodies = {f"/o/{i}": bytes([i]) * (1000 + i) for i in range(20)}
    with Scripted(lambda target, _: ok(bodies[target], "X-Goog-Hash: crc32c=a", "x-goog-hash: md5=b")) as server:
        missed, kept = fetch(server, list(bodies), in_flight=3)
    assert missed == []
    assert {list(bodies)[i]: a.body for i, a in kept.items()} == bodies
    assert all(a.status == 200 and a.headers["x-goog-hash"] == "crc32c=a, md5=b" for a in kept.values())
    assert len(server.requests) == 20
    assert server.connections <= 3  # never more than in flight, each one reused


def test_chunked_and_close_delimited_bodies_are_read_to_their_end():
    def answer(target: str, _: dict) -> tuple[bytes, bool]:
        if target == "/chunked":
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", False
        return b"HTTP/1.0 200 OK\r\n\r\nuntil the end", True  # no length: the body ends with the connection

    with Scripted(answer) as server:
        missed, kept = fetch(server, ["/chunked", "/old", "/chunked"], in_flight=1)
    assert missed == []
    assert [kept[i].body for i in range(3)] == [b"hello world", b"until the end", b"hello world"]
    assert server.connections == 2  # the HTTP/1.0 answer closed its connection, the chunked one did not


def test_what_is_not_a_clean_200_is_handed_back_by_index_not_raised():
    def answer(target: str, _: dict) -> "tuple[bytes, bool] | None":
        if target == "/missing":
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found", False
        if target == "/big":
            return ok(b"x" * 5000)
        if target == "/cut":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part", True
        if target == "/garbage":
            return b"this is not HTTP\r\n\r\n", False
        if target == "/hang":
            return None
        return ok(b"fine")

    targets = ["/a", "/missing", "/big", "/cut", "/garbage", "/hang", "/b"]
    with Scripted(answer) as server:
        missed, kept = fetch(server, targets, in_flight=2, max_body=1000, timeout=0.5)
    assert missed == [1, 2, 3, 4, 5]
    assert sorted(kept) == [0, 6] and kept[6].body == b"fine"


def test_a_kept_alive_connection_the_server_dropped_costs_a_fresh_one_not_a_miss():
    # every answer claims keep-alive, then the server closes: the next request on that
    # connection finds it gone and goes again on a new one
    with Scripted(lambda target, _: (ok(target.encode())[0], True)) as server:
        missed, kept = fetch(server, [f"/{i}" for i in range(6)], in_flight=1)
    assert missed == []
    assert [kept[i].body for i in range(6)] == [f"/{i}".encode() for i in range(6)]
    assert server.connections == 6


def test_what_land_raises_stops_the_run_and_is_raised():
    def land(i: int, answer: Answer) -> bool:
        if i == 2:
            raise OSError(28, "No space left on device")
        return True

    with Scripted(lambda target, _: ok(b"x")) as server:
        with pytest.raises(OSError, match="No space"):
            fetch(server, [f"/{i}" for i in range(50)], land=land, in_flight=1)
    assert len(server.requests) == 3  # nothing started after the failure


def test_land_refusing_an_answer_hands_it_back():
    with Scripted(lambda target, _: ok(target.encode())) as server:
        missed, _ = fetch(server, ["/0", "/1", "/2"], land=lambda i, a: a.body != b"/1")
    assert missed == [1]


def test_after_enough_misses_the_rest_is_handed_back_unasked():
    with Scripted(lambda target, _: (b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", False)) as server:
        missed, kept = fetch(server, [f"/{i}" for i in range(40)], in_flight=1, give_up_after=3)
    assert missed == list(range(40)) and kept == {}
    assert len(server.requests) == 3


def test_nothing_listens_every_index_is_handed_back():
    with Scripted(lambda target, _: ok(b"x")) as server:
        port = server.port
    missed, _ = fetch(server, ["/a", "/b"], origin=Origin("http", "127.0.0.1", port))
    assert missed == [0, 1]


def test_headers_are_asked_for_each_request_and_sent():
    asked = []

    def headers() -> dict[str, str]:
        asked.append(1)
        return {"Authorization": f"Bearer t{len(asked)}"}

    with Scripted(lambda target, _: ok(b"x")) as server:
        missed = bulk_get.get_many(server.origin(), ["/a", "/b", "/c"], headers=headers,
                                   land=lambda i, a: True, in_flight=1, max_body=10)
    assert missed == []
    assert [h["authorization"] for _, h in server.requests] == ["Bearer t1", "Bearer t2", "Bearer t3"]
    assert {h["host"] for _, h in server.requests} == {f"127.0.0.1:{server.port}"}


def test_from_a_thread_with_a_running_loop_it_runs_on_a_loop_of_its_own():
    async def inside() -> list[int]:
        return fetch(server, ["/a", "/b"])[0]

    with Scripted(lambda target, _: ok(b"x")) as server:
        assert asyncio.run(inside()) == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cryptography comes with asyncssh)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def test_tls_is_verified_with_the_context_given(certificate):
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    with Scripted(lambda target, _: ok(b"secret"), tls=served) as server:
        trusting = ssl.create_default_context(cafile=str(cert))
        missed, kept = fetch(server, ["/a"], origin=server.origin(trusting))
        assert missed == [] and kept[0].body == b"secret"
        missed, kept = fetch(server, ["/a"], origin=server.origin(ssl.create_default_context()))
        assert missed == [0] and kept == {}  # a certificate nobody vouches for: no answer taken


def test_credentials_that_cannot_refresh_hand_the_request_back():
    def headers() -> dict[str, str]:
        raise RuntimeError("the refresh token was revoked")

    with Scripted(lambda target, _: ok(b"x")) as server:
        missed = bulk_get.get_many(server.origin(), ["/a", "/b"], headers=headers, land=lambda i, a: True,
                                   in_flight=1, max_body=10)
    assert missed == [0, 1] and server.requests == []
