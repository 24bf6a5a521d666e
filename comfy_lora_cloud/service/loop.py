"""The one background event loop of a process: a daemon thread running an asyncio loop, for
everything long-lived (ComfyUI's guard and event pollers, every SSH tunnel of the process).

Why one, and why its own: in ComfyUI the nodes run each prompt in a fresh loop and the routes on
the server loop, so neither can hold a task, a client or a tunnel that must outlive the call; and
each extra loop is one more thread to reason about. ComfyUI's wiring (``comfy/wiring.py``) builds
one :class:`Loop` and hands it to the app (the sessions' tunnels) and to the poller and guard
starter; the CLI's ``comfy tunnel`` keeper process gets its app's own. This is the only module of
the package that makes a loop for a thread (the layout test holds everything else to it).

The thread starts on first use, once; :meth:`Loop.stop` (tests; ComfyUI never runs shutdown hooks)
cancels what runs on it, and a later use starts it afresh.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


class Loop:
    """A daemon thread with its own asyncio loop; any thread or loop may hand it a coroutine."""

    def __init__(self, name: str = "lora-cloud-loop"):
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def thread(self) -> threading.Thread | None:
        """The loop's thread while it runs, else None."""
        return self._thread

    def start(self) -> asyncio.AbstractEventLoop:
        """The running loop, its thread started on the first call (and after :meth:`stop`)."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=main, name=self.name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def on_loop(self) -> bool:
        """Is the caller running on this loop's thread?"""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop as a task of its own; returns at once (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.start())

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the loop from any other loop (the server's, a prompt's) without
        blocking it; on the loop itself, directly."""
        loop = self.start()
        if self.on_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def run_blocking(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Wait for ``coro`` on the loop from a thread that runs no loop (a node, a test). Never
        from the loop's own thread: it would wait on itself for ever."""
        if self.on_loop():
            coro.close()
            raise RuntimeError(f"{self.name}: run_blocking called on the loop's own thread (await run() there)")
        return self.submit(coro).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every task on the loop and end its thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None or loop.is_closed():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(cancel_all(), loop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
