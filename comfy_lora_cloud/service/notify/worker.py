"""One channel's delivery line: a bounded queue and a thread of its own.

Each channel has one, so a channel that is slow (a webhook receiver that never answers, a desktop
command that hangs) delays only its own notices. The thread starts on demand and ends after
``idle_exit_s`` with nothing to do. ``put`` never blocks: when the queue is full the item is
refused (the caller reports it), because waiting would hold whoever announced the notice, an
event loop among them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


class ChannelWorker:
    """Runs ``handle(item)`` for each item put, in order, on this channel's own thread.

    ``first`` is put ahead of the first item ever (the notifier's "take over stale claims");
    ``on_start`` is called when the thread first starts (once per worker)."""

    def __init__(self, name: str, handle: Callable[[Any], None], *, capacity: int, idle_exit_s: float,
                 first: Any = None, on_start: Callable[[], None] | None = None):
        self.name = name
        self._handle = handle
        self._idle_exit_s = idle_exit_s
        self._first = first
        self._on_start = on_start
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0
        self._thread: threading.Thread | None = None
        self._started = False

    def put(self, item: Any) -> bool:
        """Queue ``item``; False (nothing queued) when the queue is full. Never blocks."""
        with self._lock:
            items = [item]
            if not self._started and self._first is not None:
                items.insert(0, self._first)
            if self._queue.maxsize - self._queue.qsize() < len(items):
                return False
            for each in items:
                self._queue.put_nowait(each)
                self._unfinished += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=f"lora-cloud-notify-{self.name}", daemon=True)
                self._thread.start()
                if not self._started:
                    self._started = True
                    if self._on_start is not None:
                        self._on_start()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued so far is handled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._unfinished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    @property
    def waiting(self) -> int:
        """Items queued or being handled."""
        return self._unfinished

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._idle_exit_s)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                self._handle(item)
            except Exception:  # a notification must never take anything else down
                log.warning("lora_cloud notification on %s failed", self.name, exc_info=True)
            finally:
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()
