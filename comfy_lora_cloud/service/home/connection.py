"""The state store's plumbing: one short-lived connection per call (several processes and threads
share the file), one transaction per write, the schema brought up to date on first use, and a
damaged file turned into :class:`CorruptRecord`. The rows live in their own modules
(:mod:`.rows`, :mod:`.session_rows`, :mod:`.kv`), each a part of :class:`~.state.StateStore`."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Iterator

from ...errors import ConfigError, CorruptRecord
from .damage import is_damage, make_private
from .schema import MIGRATIONS, SCHEMA_VERSION, apply

log = logging.getLogger(__name__)


class Connected:
    """What every part of the store stands on: the file, its connections and its schema."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0):
        self.path = Path(path)
        self.timeout = timeout
        self.damage: str | None = None  # set when a call met a damaged file (App.state heals it)
        self.stands_for = self.path  # the home's store this one is (a temporary one may stand in: StateStore.open)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        make_private(self.path)
        self._migrated = False
        try:
            self._migrate()
        except CorruptRecord as exc:  # every later call raises it again, with this message
            log.warning("%s", exc.message)

    def _damaged(self, exc: sqlite3.Error) -> CorruptRecord:
        self.damage = str(exc)
        return CorruptRecord(f"the state store {self.path} is damaged ({exc}); move it aside and "
                             "LoRA Cloud starts a new one (the bucket keeps every run's status)")

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        if not self._migrated:
            self._migrate()
        with self._open() as conn:
            yield conn

    @contextlib.contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._damaged(exc) if is_damage(exc) else exc
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout = %d" % int(self.timeout * 1000))
            yield conn
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise self._damaged(exc) from None
            raise
        finally:
            conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Every migration the file lacks, all in one transaction: two processes opening an old
        store at once upgrade it once (the second finds the new version and does nothing)."""
        with self._open() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ConfigError(
                        f"state store {self.path} has schema {version}, newer than this version of "
                        f"comfy-lora-cloud understands ({SCHEMA_VERSION}); upgrade the package"
                    )
                for i in range(version, SCHEMA_VERSION):
                    apply(conn, MIGRATIONS[i])
                    conn.execute(f"PRAGMA user_version = {i + 1}")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        self._migrated = True

    @property
    def schema_version(self) -> int:
        with self.connect() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]
