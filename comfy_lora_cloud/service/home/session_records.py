"""Remote ComfyUI sessions: their rows in the state store, one column per field of
:class:`~comfy_lora_cloud.models.Session`.

A row is checked field by field as a run's row is (``Session.from_record``): one that is not what
it should be (``max_hours`` as text, ``created_at`` null, a state no version knows) is a
:class:`CorruptRecord` naming the session (``details["session_id"]``), from a single get; the
listings skip it and hand it to ``on_corrupt``. The service decides what such a session still
gets (``service/sessions/guard.py``: its instance is still held to its hours).

Older versions kept each session as JSON in the ``kv`` table (``session:<id>``); upgrading a store
moves them here (:func:`move_sessions_out_of_kv`). A record that read well becomes columns; one
that did not is kept as it was, in ``unread``, so it stays what it was (reported, its instance
held to the hours it can still be given), never made to look whole and never lost.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any, Mapping

from ... import jsonsafe
from ...errors import CorruptRecord
from ...models import Session, SessionState, shown
from ...settings import MAX_SESSION_HOURS

COLUMNS = tuple(f.name for f in dataclasses.fields(Session))
OLD_KV_PREFIX = "session:"  # where versions before the sessions table kept a session's JSON

CREATE_TABLE = """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        state TEXT,
        provider TEXT,
        instance_id TEXT,
        gpu TEXT,
        dph REAL,
        idle_minutes REAL,
        max_hours REAL,
        precision TEXT,
        remote_port INTEGER,
        ssh_host TEXT,
        ssh_port INTEGER,
        created_at REAL,
        updated_at REAL,
        ready_at REAL,
        error TEXT,
        unread TEXT
    )
"""
# The columns may be null: a row is checked when read, not refused when written, so a damaged one
# is still found, reported and its instance held to hours, never hidden by a failed write.
# ``unread``: the text an older version kept for a session that could not be read then either.


def _data(row: Mapping[str, Any]) -> tuple[Any, str]:
    """The row's record (its columns, or the text it was carried over as), or None and why not."""
    unread = row.get("unread")
    if unread is None:
        return {name: row.get(name) for name in COLUMNS}, ""
    try:
        return jsonsafe.loads(unread), ""
    except ValueError as exc:
        return None, str(exc)


def row_to_session(row: Mapping[str, Any]) -> Session:
    """The session a row holds; :class:`CorruptRecord` naming what is wrong when it cannot be read."""
    sid = str(row.get("id"))
    data, why = _data(row)
    wrong = [why] if why else Session.from_record(data, max_hours=MAX_SESSION_HOURS)[1]
    if not wrong and data.get("id") != sid:
        wrong = [f"it names session {shown(data.get('id'))}"]
    if wrong:
        raise CorruptRecord(f"the record of session {sid[:100]} in the state store cannot be read "
                            f"({'; '.join(wrong)[:400]})", session_id=sid)
    return Session.from_record(data, max_hours=MAX_SESSION_HOURS)[0]


def salvage(row: Mapping[str, Any], *, born: float) -> tuple[Session, list[str]]:
    """A damaged row as far as it can be read: ``(session, wrong)``. Fields that can be read are
    kept; max_hours falls back to the most a session may have, the times to ``born`` (its
    instance's first sighting here), an unreadable state to starting (it may still bill)."""
    sid = str(row.get("id"))
    data, why = _data(row)
    fallback = {"id": sid, "max_hours": MAX_SESSION_HOURS, "created_at": born, "updated_at": born,
                "state": SessionState.STARTING}
    session, wrong = Session.from_record(data, max_hours=MAX_SESSION_HOURS, fallback=fallback)
    session.id = sid
    return session, [why] if why else wrong


def is_live(row: Mapping[str, Any]) -> bool:
    """Whether the row is a readable session that has not ended."""
    try:
        return not row_to_session(row).state.is_terminal
    except CorruptRecord:
        return False


def upsert(conn: sqlite3.Connection, record: Mapping[str, Any], unread: str | None = None) -> None:
    unknown = set(record) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not a session field: {', '.join(sorted(unknown))}")
    values = {name: record.get(name) for name in COLUMNS}
    values["unread"] = unread
    cols = ", ".join(values)
    marks = ", ".join(f":{k}" for k in values)
    updates = ", ".join(f"{k}=excluded.{k}" for k in values if k != "id")
    conn.execute(f"INSERT INTO sessions ({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}", values)


def move_sessions_out_of_kv(conn: sqlite3.Connection) -> None:
    """The schema step that gives sessions their table: each ``session:<id>`` value of the ``kv``
    table becomes a row (columns when it reads as a session, else its text in ``unread``) and
    leaves ``kv``. An empty value meant no record, and goes. Runs inside the upgrade's
    transaction, so a store is moved whole or not at all."""
    conn.execute(CREATE_TABLE)
    found = conn.execute("SELECT key, value FROM kv WHERE substr(key, 1, ?) = ?",
                         (len(OLD_KV_PREFIX), OLD_KV_PREFIX)).fetchall()
    for key, value in found:
        sid = key[len(OLD_KV_PREFIX):]
        if not value:
            continue
        try:
            session = row_to_session({"id": sid, "unread": value})
        except CorruptRecord:
            upsert(conn, {"id": sid}, unread=value)
        else:
            upsert(conn, session.to_dict())
    conn.execute("DELETE FROM kv WHERE substr(key, 1, ?) = ?", (len(OLD_KV_PREFIX), OLD_KV_PREFIX))
