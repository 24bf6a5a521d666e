"""The store's small key/value table: tokens, cursors, claims and notes of the services."""

from __future__ import annotations

from typing import Callable

from ...errors import CorruptRecord
from .connection import Connected
from .reading import finite


class KeyValues(Connected):
    # ---- small key/value (tokens, cursors) ---------------------------------------------------
    def get_kv(self, key: str) -> str | None:
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def get_kv_float(self, key: str) -> float | None:
        """A number kept in the key/value table; None when unset, CorruptRecord when not a number."""
        raw = self.get_kv(key)
        if not raw:
            return None
        value = finite(raw)
        if value is None:
            raise CorruptRecord(f"state store value {key!r} is {raw[:40]!r}, not a number", key=key)
        return value

    def set_kv(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                         (key, value))

    def claim_kv(self, prefix: str, key: str, value: str, blocks: Callable[[str], bool]) -> tuple[str, str] | None:
        """Set ``key`` to ``value`` unless a value under ``prefix`` ``blocks`` it, in one
        transaction (two controllers claiming at the same moment: one wins). Returns the
        blocking ``(key, value)``, or None when the claim was written."""
        with self.transaction() as conn:
            for k, v in conn.execute("SELECT key, value FROM kv WHERE substr(key, 1, ?) = ?",
                                     (len(prefix), prefix)).fetchall():
                if blocks(v):
                    return k, v
            conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                         "value=excluded.value", (key, value))
        return None

    def kv_items(self, prefix: str) -> list[tuple[str, str]]:
        """Every ``(key, value)`` whose key starts with ``prefix``, in key order."""
        with self.connect() as conn:
            rows = conn.execute("SELECT key, value FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key",
                                (len(prefix), prefix)).fetchall()
        return [(r[0], r[1]) for r in rows]

