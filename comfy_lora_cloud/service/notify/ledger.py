"""The notify ledger: one state-store row per notice and channel, what makes delivery exactly-once.

Before a channel delivers a notice, the notice is claimed for that channel (``kv`` row
``notify:<channel>:<key>``, an ``INSERT OR IGNORE``: of two processes sharing the home, ComfyUI
and the CLI, one wins); the row then records ``sent``, ``skipped`` or ``failed``. A claim whose
process died before finishing (``pending`` for longer than :data:`STALE_CLAIM_S`) is taken over,
in one conditional update, by the next notifier that starts.

The rows are read back tolerantly: a row that is not what this module writes (not JSON, the
wrong shape, a state or a time of the wrong type) is listed as ``damaged`` and never delivered
again, so one bad row costs that one notice, not the listing or the other claims.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ... import jsonsafe
from .notices import Notice, finite

KV_PREFIX = "notify:"
STALE_CLAIM_S = 600.0  # a claim left pending this long: its process died; deliver it again
STATES = ("pending", "sent", "skipped", "failed")
DAMAGED = "damaged"


@dataclass(frozen=True)
class Entry:
    """One ledger row as read: ``state`` is one of :data:`STATES`, or ``damaged``."""

    channel: str
    key: str
    state: str
    at: float | None
    detail: str = ""
    notice: Notice | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "key": self.key, "state": self.state, "at": self.at, "detail": self.detail}


def read_entry(row_key: Any, value: Any) -> Entry:
    """The row as an :class:`Entry`; never raises (a malformed row is a ``damaged`` entry)."""
    name = str(row_key)[len(KV_PREFIX):]
    channel, _, key = name.partition(":")

    def damaged(why: str) -> Entry:
        return Entry(channel, key, DAMAGED, None, f"unreadable ledger row: {why}")

    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return damaged(f"a {type(value).__name__}, not text")
    try:
        record = jsonsafe.loads(value, max_bytes=256 * 1024)
    except ValueError as exc:
        return damaged(str(exc)[:120])
    if not isinstance(record, dict):
        return damaged(f"a JSON {type(record).__name__}, not an object")
    state, at, detail = record.get("state"), finite(record.get("at")), record.get("detail", "")
    if state not in STATES or at is None or not isinstance(detail, str):
        return damaged("its state, time or detail is missing or of the wrong type")
    try:
        notice: Notice | None = Notice.from_dict(record.get("notice"))
    except ValueError:
        if state == "pending":
            return damaged("a claim whose notice cannot be read (it can never be delivered)")
        notice = None
    return Entry(channel, key, state, at, detail[:500], notice)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Ledger:
    """The rows, over the app's state store (``state`` is read on each use: the store follows the
    settings' home)."""

    def __init__(self, state: Callable[[], Any]):
        self._state = state

    @staticmethod
    def row_key(channel: str, n: Notice) -> str:
        return f"{KV_PREFIX}{channel}:{n.key}"

    def claim(self, channel: str, n: Notice) -> bool:
        """True when this process won the right to deliver ``n`` on ``channel`` (first claim)."""
        record = {"state": "pending", "at": time.time(), "owner": _owner(), "notice": asdict(n)}
        with self._state().transaction() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO kv (key, value) VALUES (?, ?)",
                               (self.row_key(channel, n), json.dumps(record)))
            return cur.rowcount == 1

    def finish(self, channel: str, n: Notice, outcome: str, detail: str) -> None:
        record = {"state": outcome, "at": time.time(), "detail": detail, "notice": asdict(n)}
        self._state().set_kv(self.row_key(channel, n), json.dumps(record))

    def _rows(self, channel: str | None = None) -> list[tuple[Any, Any]]:
        prefix = KV_PREFIX + (f"{channel}:" if channel else "")
        with self._state().connect() as conn:
            return conn.execute("SELECT key, value FROM kv WHERE substr(key, 1, ?) = ?",
                                (len(prefix), prefix)).fetchall()

    def take_over_stale(self, channel: str, now: float | None = None) -> list[Notice]:
        """The claims on ``channel`` a dead process left pending, each now claimed by this one
        (a conditional update: of two notifiers starting together, one takes each)."""
        now = time.time() if now is None else now
        taken = []
        for key, value in self._rows(channel):
            entry = read_entry(key, value)
            if entry.state != "pending" or entry.notice is None or now - (entry.at or now) < STALE_CLAIM_S:
                continue
            record = json.loads(value)
            with self._state().transaction() as conn:
                cur = conn.execute("UPDATE kv SET value = ? WHERE key = ? AND value = ?",
                                   (json.dumps({**record, "at": now, "owner": _owner()}), key, value))
                if cur.rowcount == 1:
                    taken.append(entry.notice)
        return taken

    def entries(self) -> list[Entry]:
        """Every row, newest first (damaged ones last)."""
        out = [read_entry(key, value) for key, value in self._rows()]
        return sorted(out, key=lambda e: e.at or 0.0, reverse=True)
