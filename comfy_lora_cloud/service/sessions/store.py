"""The sessions this home recorded, read and written as :class:`~comfy_lora_cloud.models.Session`.

They live in the state store's sessions table; what a row is, and when one cannot be read (a
:class:`CorruptRecord` naming the session, as for a run's row), is the store's
(``home/session_rows.py``). What a session whose row cannot be read still gets: the guard holds
its instance to the hours it can still be given (``SessionGuard._damaged_hours``), the views list
it as damaged (``views.list_views``), and nothing else stops for it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from ...errors import CorruptRecord, ObjectNotFound
from ...models import Session

log = logging.getLogger(__name__)


def put_session(state: Any, session: Session, now: float) -> Session:
    session.updated_at = now
    state.put_session(session.to_dict())
    return session


def save_session(state: Any, session: Session, now: float, /, **fields: Any) -> Session:
    """``session`` with ``fields`` set (a field may be named ``state``: the others are positional),
    checked and written whole (a damaged row becomes whole)."""
    for k, v in fields.items():
        setattr(session, k, v)
    session.__post_init__()
    return put_session(state, session, now)


def update_session(state: Any, session_id: str, now: float, /, **fields: Any) -> Session:
    session = state.get_session(session_id)
    if session is None:
        raise ObjectNotFound(f"no session {session_id!r}")
    return save_session(state, session, now, **fields)


def records(state: Any, *, on_corrupt: Callable[[CorruptRecord], None] | None = None) -> list[Session]:
    """Every session this controller recorded, newest first (unreadable ones skipped: handed to
    ``on_corrupt``, else logged)."""
    return state.list_sessions(on_corrupt=on_corrupt or (lambda exc: log.warning("%s", exc.message)))


def live_record(state: Any) -> Session | None:
    return next((s for s in records(state) if not s.state.is_terminal), None)


def first_seen(state: Any, provider: str, instance_id: str | None) -> float | None:
    """When this controller first saw the instance (the state store's ``created_at``, our clock)."""
    if not instance_id:
        return None
    for row in state.list_instances(include_destroyed=True, on_corrupt=lambda exc: None):
        if row["id"] == instance_id and row["provider"] == provider:
            return row["created_at"]
    return None
