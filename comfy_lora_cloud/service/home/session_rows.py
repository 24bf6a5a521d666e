"""The sessions table: a part of :class:`~.state.StateStore`; what a row means and how an older
store's sessions came here is in :mod:`.session_records`."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ...models import Session
from .connection import Connected
from .reading import OnCorrupt, readable, warn
from .session_records import is_live, row_to_session, upsert


class SessionRows(Connected):
    """The sessions table."""

    def put_session(self, record: Mapping[str, Any]) -> None:
        """Insert or replace a session's row with ``record`` (a ``Session.to_dict()``), as given:
        the checks are on reading."""
        with self.transaction() as conn:
            upsert(conn, record)

    def session_row(self, session_id: str) -> dict[str, Any] | None:
        """A session's row as stored (its columns and ``unread``), for a reader that must act on
        a damaged one (:func:`salvage`)."""
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return dict(row) if row else None

    def get_session(self, session_id: str) -> Session | None:
        row = self.session_row(session_id)
        return row_to_session(row) if row else None

    def session_rows(self) -> list[dict[str, Any]]:
        """Every session row as stored, in id order."""
        with self.connect() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM sessions ORDER BY id").fetchall()]

    def list_sessions(self, *, on_corrupt: OnCorrupt = warn) -> list[Session]:
        """Every session, newest first; a row that cannot be read is skipped and handed to ``on_corrupt``."""
        sessions = list(readable(self.session_rows(), row_to_session, on_corrupt))
        return sorted(sessions, key=lambda s: s.created_at, reverse=True)

    def claim_session(self, record: Mapping[str, Any],
                      blocks: Callable[[dict[str, Any]], bool] = is_live) -> dict[str, Any] | None:
        """Insert ``record`` unless a row ``blocks`` it (default: a live session), in one
        transaction (two clicks, two processes: one session is rented). Returns the blocking
        row, or None when the claim was written."""
        with self.transaction() as conn:
            for row in conn.execute("SELECT * FROM sessions ORDER BY id").fetchall():
                if blocks(dict(row)):
                    return dict(row)
            upsert(conn, record)
        return None
