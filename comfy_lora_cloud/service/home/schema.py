"""The state store's schema, versioned with ``PRAGMA user_version``: :data:`MIGRATIONS` is
append-only. A step is SQL, or a function given the connection inside the upgrade's transaction
(for a step that must read what an older version wrote, as sessions moving out of ``kv``)."""

from __future__ import annotations

import sqlite3
from typing import Callable, Union

from .session_records import move_sessions_out_of_kv

Migration = Union[str, Callable[[sqlite3.Connection], None]]

MIGRATIONS: list[Migration] = [
    # 1: runs, instances, ledger
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        dataset TEXT NOT NULL,
        preset TEXT NOT NULL,
        lora_name TEXT NOT NULL,
        config_hash TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        provider TEXT NOT NULL DEFAULT 'vast',
        instance_id TEXT,
        gpu TEXT NOT NULL DEFAULT '',
        dph REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        error TEXT,
        spec TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX runs_config_hash ON runs(config_hash);
    CREATE TABLE instances (
        id TEXT NOT NULL,
        provider TEXT NOT NULL DEFAULT 'vast',
        label TEXT NOT NULL DEFAULT '',
        run_id TEXT,
        state TEXT NOT NULL,
        gpu_name TEXT NOT NULL DEFAULT '',
        dph_total REAL NOT NULL DEFAULT 0,
        storage_dph REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        destroyed_at REAL,
        data TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (provider, id)
    );
    CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        run_id TEXT,
        kind TEXT NOT NULL,
        usd REAL NOT NULL,
        start REAL NOT NULL,
        "end" REAL NOT NULL,
        source TEXT NOT NULL DEFAULT 'estimate'
    );
    CREATE INDEX ledger_start ON ledger(start);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: sessions in a table of their own (they were JSON in kv under "session:<id>")
    move_sessions_out_of_kv,
]

SCHEMA_VERSION = len(MIGRATIONS)


def split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def apply(conn: sqlite3.Connection, step: Migration) -> None:
    if callable(step):
        step(conn)
        return
    for stmt in split_sql(step):
        conn.execute(stmt)
