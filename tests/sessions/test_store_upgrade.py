"""A state store written by the version that kept sessions as JSON in the ``kv`` table
(``session:<id>``, schema 1) upgrades in place when it is first opened: every session is found in
the sessions table with the same fields, a record that could not be read then is still one that
cannot be read (the same words, the same session), the other ``kv`` rows stay, and opening it
again changes nothing."""

from __future__ import annotations

import json
import sqlite3

import pytest

from comfy_lora_cloud.errors import CorruptRecord
from comfy_lora_cloud.models import Session, SessionState
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.home.schema import MIGRATIONS, SCHEMA_VERSION
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage.local import LocalStorage

READY = Session(id="session-20260101-120000-ab12", state=SessionState.READY, instance_id="4242", gpu="RTX 4090",
                dph=0.41, idle_minutes=15.0, max_hours=3.5, precision="fp16", remote_port=8189, ssh_host="ssh4.vast.ai",
                ssh_port=22042, created_at=1_767_268_800.0, updated_at=1_767_269_000.5, ready_at=1_767_268_950.25)
STOPPED = Session(id="session-20251231-080000-cd34.b0123456789ab", state=SessionState.STOPPED, instance_id="77",
                  gpu="A100", dph=1.2, created_at=1_767_168_000.0, updated_at=1_767_170_000.0,
                  error="stopped by the user")
LAUNCHING = Session(id="session-20260101-130000-ef56", state=SessionState.LAUNCHING, gpu="RTX 3090", dph=0.2,
                    created_at=1_767_272_400.0, updated_at=1_767_272_400.0)  # the intent, before the create call
# what the older version's own checks called damaged, each kept as it was
DAMAGED = {
    "session-text": json.dumps({**READY.to_dict(), "id": "session-text", "max_hours": "4"}, sort_keys=True),
    "session-garbage": "{not json",
    "session-deep": "[" * 50_000 + "]" * 50_000,
    "session-list": "[1, 2]",
    "session-elsewhere": json.dumps({**READY.to_dict(), "id": "session-other"}, sort_keys=True),
}
OTHER_KV = {  # the rest of kv is not sessions: it stays where it was
    "sessions:keeper:" + READY.id: json.dumps({"pid": 1, "port": 5555, "url": "http://127.0.0.1:5555"}),
    "sessions:unowned_since:991": "1767268000.0",
    "notify:webhook:session:s-1:idle": "{}",
    "state:rebuilt": "",
}


def old_store(path) -> None:
    """The file the older version left: its one schema step and the rows it wrote, byte for byte
    (``Sessions._put`` wrote ``json.dumps(session.to_dict(), sort_keys=True)``; an empty value
    was a record cleared)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for stmt in MIGRATIONS[0].split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("PRAGMA user_version = 1")
        rows = {f"session:{s.id}": json.dumps(s.to_dict(), sort_keys=True) for s in (READY, STOPPED, LAUNCHING)}
        rows |= {f"session:{sid}": raw for sid, raw in DAMAGED.items()}
        rows |= {"session:session-cleared": "", **OTHER_KV}
        conn.executemany("INSERT INTO kv (key, value) VALUES (?, ?)", list(rows.items()))
        conn.execute("INSERT INTO runs (id, dataset, preset, lora_name, state, created_at, updated_at) "
                     "VALUES ('run-1', 'cats', 'flux-default', 'cats_v1', 'training', 1.0, 2.0)")
        conn.execute("INSERT INTO ledger (instance_id, run_id, kind, usd, start, \"end\") "
                     "VALUES ('4242', NULL, 'gpu', 0.5, 10.0, 20.0)")
    finally:
        conn.close()


def everything(path) -> dict:
    conn = sqlite3.connect(path)
    try:
        return {table: sorted(map(tuple, conn.execute(f"SELECT * FROM {table}").fetchall()), key=repr)
                for table in ("runs", "instances", "ledger", "kv", "sessions")} | \
               {"version": conn.execute("PRAGMA user_version").fetchone()[0]}
    finally:
        conn.close()


def test_an_older_store_upgrades_in_place_with_every_session(tmp_path):
    path = tmp_path / "state.db"
    old_store(path)
    store = StateStore.open(path)

    assert store.schema_version == SCHEMA_VERSION == 2
    for session in (READY, STOPPED, LAUNCHING):
        assert store.get_session(session.id) == session  # every field, as it was
    newest_first = [LAUNCHING.id, READY.id, STOPPED.id]
    assert [s.id for s in store.list_sessions(on_corrupt=lambda exc: None)] == newest_first
    assert store.get_session("session-cleared") is None  # an empty value was no record

    words = {"session-text": "max_hours is '4'", "session-garbage": "not valid JSON",
             "session-deep": "nested deeper", "session-list": "not an object",
             "session-elsewhere": "names session 'session-other'"}
    for sid, text in words.items():
        with pytest.raises(CorruptRecord, match=text) as caught:
            store.get_session(sid)
        assert caught.value.details["session_id"] == sid
        assert store.session_row(sid)["unread"] == DAMAGED[sid]  # kept as it was, not lost
    skipped: list[CorruptRecord] = []
    store.list_sessions(on_corrupt=skipped.append)
    assert sorted(e.details["session_id"] for e in skipped) == sorted(words)

    assert store.kv_items("session:") == []  # moved, not copied
    assert {k: store.get_kv(k) for k in OTHER_KV} == OTHER_KV
    assert [r.id for r in store.list_runs()] == ["run-1"] and [c.usd for c in store.costs()] == [0.5]
    assert store.rebuild_due() is None  # an upgrade is not damage


def test_opening_an_upgraded_store_again_changes_nothing(tmp_path):
    path = tmp_path / "state.db"
    old_store(path)
    StateStore.open(path)
    upgraded = everything(path)
    StateStore.open(path).list_sessions(on_corrupt=lambda exc: None)
    StateStore(path).get_session(READY.id)
    assert everything(path) == upgraded and upgraded["version"] == 2


def test_the_upgrade_is_whole_or_not_at_all(tmp_path, monkeypatch):
    """A failure in the middle of the move leaves the older store as it was (one transaction),
    so the next open upgrades it from the start."""
    from comfy_lora_cloud.service.home import session_records

    path = tmp_path / "state.db"
    old_store(path)
    before = _old_tables(path)
    real = session_records.upsert
    calls = []

    def fail_on_third(conn, record, unread=None):
        calls.append(record.get("id"))
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error")
        real(conn, record, unread)

    monkeypatch.setattr(session_records, "upsert", fail_on_third)
    with pytest.raises(sqlite3.OperationalError):
        StateStore(path).schema_version
    assert _old_tables(path) == before and not before["has_sessions"]
    monkeypatch.setattr(session_records, "upsert", real)
    assert StateStore(path).get_session(READY.id) == READY


def _old_tables(path) -> dict:
    conn = sqlite3.connect(path)
    try:
        out = {table: sorted(map(tuple, conn.execute(f"SELECT * FROM {table}").fetchall()), key=repr)
               for table in ("runs", "instances", "ledger", "kv")}
        out["version"] = conn.execute("PRAGMA user_version").fetchone()[0]
        out["has_sessions"] = bool(conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sessions'").fetchone())
        return out
    finally:
        conn.close()


async def test_the_app_over_an_upgraded_home_lists_every_session(tmp_path, clean_env):
    clean_env.mkdir(parents=True)
    old_store(clean_env / "state.db")
    app = App(Settings.load(clean_env), storage=LocalStorage(tmp_path / "bucket"))
    views = {v.id: v for v in await app.sessions.list(limit=50)}
    assert set(views) == {READY.id, STOPPED.id, LAUNCHING.id, *DAMAGED}
    assert views[READY.id].precision == "fp16" and views[READY.id].ssh_port == 22042
    assert views[STOPPED.id].error == "stopped by the user" and not views[STOPPED.id].live
    assert "max_hours is '4'" in views["session-text"].damaged and views["session-text"].state == "ready"
    assert views["session-garbage"].state == "damaged"
    assert (await app.sessions.current()).id == LAUNCHING.id  # the newest readable live one
