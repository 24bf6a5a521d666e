"""Many small GETs at once from one origin, on one asyncio loop.

A pull of a thousand small files is bound by what each request costs the client, not by the
network: threads pay it in GIL hand-offs and futex calls (64 threads on 2 cores spent more
system time than the downloads), and the round trip of each request needs many of them in flight.
Here one event loop keeps up to ``in_flight`` requests going on kept-alive connections, each
answer read whole into memory (these are small files) and parsed by h11 (the sans-I/O HTTP/1.1
parser httpx's own stack uses, installed with it); the caller's ``land`` runs on a couple of
threads, so writing, fsync and rename never hold the loop.

This is the fast path and only that: an answer that is not a clean ``200`` (any other status, a
dropped or timed-out connection, a body larger than ``max_body``), or one ``land`` refuses (say a
checksum that does not match), is handed back to the caller by index, for its careful path (the
storage's own download with its retry policy, its token refresh and its error messages). After
``give_up_after`` such misses the rest is handed back unasked: a bucket that throttles or a
network that is down gets the careful path's backoff, not a thousand fast failures. What ``land``
raises stops the run: nothing more starts, what runs finishes, and the error is raised.

Blocking: call from a thread (or the main thread), like the rest of the storage layer.
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import h11

#: what a miss can be on the wire: refused, reset or timed-out connections (OSError, ssl errors
#: included), an answer h11 cannot parse, a body over the limit
_MISSES = (OSError, asyncio.TimeoutError, h11.ProtocolError, EOFError)


@dataclass(frozen=True)
class Origin:
    """Where the GETs go: ``http`` or ``https`` (with the TLS context to verify it by)."""

    scheme: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class Answer(NamedTuple):
    """A whole answer: its status, its headers (names lower-cased; repeated ones joined with
    ``", "``, as requests does) and its body as sent (no content decoding)."""

    status: int
    headers: dict[str, str]
    body: bytes


class TooLarge(EOFError):
    """The body is larger than the caller holds in memory."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: bytes in go to h11, a waiting ``get`` is woken."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self.h11.receive_data(b"")
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---- one exchange ----------------------------------------------------------------------
    async def get(self, target: str, headers: list[tuple[str, str]], max_body: int) -> Answer:
        assert self.transport is not None
        self.transport.write(self.h11.send(h11.Request(method="GET", target=target, headers=headers))
                             + self.h11.send(h11.EndOfMessage()))
        status, fields, body = 0, {}, bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                if self.closed:
                    raise ConnectionResetError("the connection closed mid-answer")
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
                self._waiter = None
            elif isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    key, text = name.decode("latin-1"), value.decode("latin-1")
                    fields[key] = f"{fields[key]}, {text}" if key in fields else text
                if int(fields.get("content-length", 0) or 0) > max_body:
                    raise TooLarge(target)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_body:
                    raise TooLarge(target)
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, fields, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the connection closed before the answer")
            # InformationalResponse (100 Continue and the like): nothing to do

    @property
    def reusable(self) -> bool:
        """Whether the exchange ended cleanly and the server keeps the connection open."""
        if self.closed or self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            return False
        self.h11.start_next_cycle()
        return True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """Kept-alive connections to one origin, made as needed."""

    def __init__(self, origin: Origin, timeout: float):
        self.origin = origin
        self.timeout = timeout
        self._idle: list[_Connection] = []

    async def get(self, target: str, headers: list[tuple[str, str]], max_body: int) -> Answer | None:
        """The whole answer, or None where there was none (see ``_MISSES``). A kept-alive
        connection the server dropped while it was idle costs one fresh try, not a miss."""
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await self._exchange(conn, target, headers, max_body)
            except TooLarge:
                return None
            except _MISSES:
                break  # stale: once more on a new connection
        try:
            conn = await _within(self._connect(), self.timeout)
            return await self._exchange(conn, target, headers, max_body)
        except _MISSES:
            return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        o = self.origin
        _, conn = await loop.create_connection(_Connection, o.host, o.port, ssl=o.tls,
                                               server_hostname=o.host if o.tls else None)
        return conn

    async def _exchange(self, conn: _Connection, target: str, headers: list[tuple[str, str]],
                        max_body: int) -> Answer:
        try:
            answer = await _within(conn.get(target, headers, max_body), self.timeout)
        except BaseException:
            conn.close()
            raise
        if conn.reusable:
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


async def _within(awaitable, seconds: float):  # type: ignore[no-untyped-def]
    if hasattr(asyncio, "timeout"):  # 3.11+: no task per call
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


def get_many(
    origin: Origin,
    targets: Sequence[str],
    *,
    headers: Callable[[], dict[str, str]],
    land: Callable[[int, Answer], bool],
    in_flight: int,
    max_body: int,
    timeout: float = 120.0,
    landers: int = 4,
    give_up_after: int = 16,
) -> list[int]:
    """GET every target (a path with its query) from ``origin``, up to ``in_flight`` at once.

    ``headers()`` is asked before each request (credentials that expire stay fresh). Every
    ``200`` answer read whole goes to ``land(index, answer)`` on one of ``landers`` threads; it
    returns whether it kept it. Returns the indexes, in order, that were not kept (the caller's
    to fetch its careful way). What ``land`` raises is raised once the running requests end."""
    if not targets:
        return []
    run = _get_many(origin, targets, headers, land, max(1, min(in_flight, len(targets))), max_body,
                    timeout, landers, give_up_after)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run)
    with ThreadPoolExecutor(1, thread_name_prefix="lora-cloud-get") as ex:  # a loop runs here: never nest
        return ex.submit(asyncio.run, run).result()


async def _get_many(origin: Origin, targets: Sequence[str], headers: Callable[[], dict[str, str]],
                    land: Callable[[int, Answer], bool], in_flight: int, max_body: int, timeout: float,
                    landers: int, give_up_after: int) -> list[int]:
    loop = asyncio.get_running_loop()
    pool = _Pool(origin, timeout)
    threads = ThreadPoolExecutor(landers, thread_name_prefix="lora-cloud-land")
    todo = iter(range(len(targets)))  # shared: each worker takes the next index as it finishes one
    missed: list[int] = []
    failed: list[BaseException] = []
    fixed = [("Host", origin.host_header), ("User-Agent", "comfy-lora-cloud"), ("Accept-Encoding", "gzip")]

    async def worker() -> None:
        for i in todo:
            if failed:
                return
            if len(missed) >= give_up_after:
                missed.append(i)
                continue
            try:
                sent = fixed + list(headers().items())
            except Exception:  # noqa: BLE001 - credentials that cannot refresh: the careful way says why
                missed.append(i)
                continue
            answer = await pool.get(targets[i], sent, max_body)
            if answer is None or answer.status != 200:
                missed.append(i)
                continue
            try:
                kept = await loop.run_in_executor(threads, land, i, answer)
            except BaseException as exc:  # noqa: BLE001 - raised below, once the others stop
                failed.append(exc)
                return
            if not kept:
                missed.append(i)

    try:
        await asyncio.gather(*(worker() for _ in range(in_flight)))
    finally:
        pool.close()
        threads.shutdown(wait=True)
    if failed:
        raise failed[0]
    return sorted(missed)
