"""A TCP proxy on 127.0.0.1 that adds a fixed delay to every HTTP request.

Why: the GCS emulator answers in about a millisecond, a real bucket in tens of milliseconds
(a laptop to a GCS region). The delay is added once per request, when the first bytes of a
request arrive (at the start of a connection, and again after each response on a kept-alive
connection), before they are forwarded; request bodies and responses then stream at full speed.

    python benchmarks/latency_proxy.py 127.0.0.1:9023 --delay-ms 30   # prints the proxy port
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import threading


class LatencyProxy:
    """Runs on its own event loop in a daemon thread; ``start()`` returns the listening port."""

    def __init__(self, target_host: str, target_port: int, delay: float = 0.03):
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()  # strong references: the loop only keeps weak ones

    def start(self) -> int:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512), self._loop
        )
        self._server = fut.result(timeout=10)
        return self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server:
                self._server.close()
            for _ in range(10):  # kept-alive connections still open (and any accepted meanwhile)
                handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not handlers:
                    break
                for t in handlers:
                    t.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
            if self._server:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.close()
            return
        state = {"new_request": True}
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if state["new_request"]:
                    state["new_request"] = False
                    self.requests += 1
                    await asyncio.sleep(self.delay)
                server_w.write(data)
                await server_w.drain()
            with contextlib.suppress(OSError):
                server_w.write_eof()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                state["new_request"] = True  # a response is flowing: the next client bytes are a new request
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (client_w, server_w):
                w.close()
            self._handlers.discard(me)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="host:port to forward to")
    ap.add_argument("--delay-ms", type=float, default=30.0)
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    proxy = LatencyProxy(host, int(port), args.delay_ms / 1000)
    print(proxy.start(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    proxy.stop()


if __name__ == "__main__":
    main()
