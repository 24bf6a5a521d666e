"""Session rows written behind the service's back (a bug, a hand edit, a damaged page, an older
version's record), for tests of what a damaged row still gets."""

from __future__ import annotations

from typing import Any

from comfy_lora_cloud.service.home.state import StateStore


def plant(store: StateStore, record: dict[str, Any]) -> None:
    """A row holding ``record``'s values as given (SQLite keeps text in a number column as text)."""
    store.put_session(record)


def plant_unread(store: StateStore, session_id: str, text: str) -> None:
    """A row carried over from an older version whose record could not be read: its text as it was."""
    with store.transaction() as conn:
        conn.execute("INSERT INTO sessions (id, unread) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET "
                     "unread = excluded.unread", (session_id, text))


def forget(store: StateStore, session_id: str) -> None:
    """No row at all (a record lost with a store, or never written by a crashed start)."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
