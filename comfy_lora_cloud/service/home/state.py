"""The state store: SQLite in WAL mode in the home folder.

Runs, instances and the cost ledger (:mod:`.rows`), remote ComfyUI sessions
(:mod:`.session_rows`) and a small key/value table (:mod:`.kv`). ComfyUI, the CLI and the
watchdog may use it at the same moment (several processes, several threads): every call opens a
short-lived connection with a busy timeout, and every write is one transaction
(:mod:`.connection`). The schema is versioned with ``PRAGMA user_version``;
:data:`~.schema.MIGRATIONS` is append-only, and a store an older version wrote is upgraded in
place when first opened.

The bucket stays the source of truth for runs (``runs/<id>/status.json``); this store is what
this controller knows: what it intended to launch, which instances it created, what it spent.

A damaged file (truncated, overwritten) raises :class:`CorruptRecord` from every call, also
from a store opened on it (opening does not raise, so the guard can still enforce the budgets
that need no store; an empty file is SQLite's new database, so a state.db cut to 0 bytes starts
afresh and the bucket's live runs keep their instances). A row that cannot be read as what it
should be (an unknown run state, a spec that is not JSON, a price that is not a number) raises
:class:`CorruptRecord` from a single get; listings skip it and hand it to ``on_corrupt`` (default: a logged warning), so
one bad row never hides the others. ``instances.created_at`` is when this controller first
saw or recorded the instance, on this controller's clock (never the provider's start date).

:meth:`StateStore.open` (what the app uses) heals a damaged store instead: a folder in its place,
a file SQLite calls no database, or one that fails SQLite's quick check is set aside (renamed to
``state.db.damaged-<UTC time>``, its ``-wal``/``-shm`` files with it; never deleted) and a new
store starts, marked :data:`REBUILD_KEY` so the next guard pass refills it from the bucket and the
provider's listing (``service/guard/store_rebuild.py``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from .damage import REBUILD_KEY, damage_of, repairing, set_aside
from .kv import KeyValues
from .reading import OnCorrupt
from .rows import Rows
from .schema import MIGRATIONS, SCHEMA_VERSION
from .session_records import COLUMNS as SESSION_COLUMNS
from .session_records import row_to_session, salvage
from .session_rows import SessionRows

__all__ = ["MIGRATIONS", "REBUILD_KEY", "SCHEMA_VERSION", "SESSION_COLUMNS", "OnCorrupt", "StateStore", "damage_of",
           "row_to_session", "salvage", "set_aside"]

log = logging.getLogger(__name__)


class StateStore(Rows, SessionRows, KeyValues):
    """The home's state store; see the module docstring."""

    @classmethod
    def open(cls, path: str | Path, *, timeout: float = 30.0, clock: Callable[[], float] = time.time) -> "StateStore":
        """The store at ``path``; a damaged one is set aside and a new one started in its place,
        marked for a rebuild (:meth:`rebuild_due`)."""
        path = Path(path)
        if damage_of(path, timeout) is None:
            return cls(path, timeout=timeout)
        with repairing(path):
            why = damage_of(path, timeout)  # again: another process may have set it aside meanwhile
            if why is None:
                return cls(path, timeout=timeout)
            now = clock()
            try:
                aside = str(set_aside(path, now))
                store = cls(path, timeout=timeout)
            except FileNotFoundError:  # another process set it aside first
                return cls(path, timeout=timeout)
            except OSError as exc:  # a read-only home: a store of this process's own stands in
                import tempfile

                aside = (f"nowhere: it could not be moved ({exc.strerror or exc}), so this process uses a "
                         "temporary store")
                store = cls(Path(tempfile.mkdtemp(prefix="lora-cloud-state-")) / path.name, timeout=timeout)
                store.stands_for = path
            store.set_kv(REBUILD_KEY, json.dumps({"set_aside": aside, "why": why, "at": now}))
        log.warning("the state store %s was damaged (%s): set aside as %s; a new one is rebuilt from the bucket",
                    path, why, aside)
        return store

    def rebuild_due(self) -> dict[str, Any] | None:
        """The note :meth:`open` left when it set a damaged store aside, until the rebuild."""
        raw = self.get_kv(REBUILD_KEY)
        if not raw:
            return None
        try:
            note = json.loads(raw)
        except ValueError:
            note = None
        return note if isinstance(note, dict) else {"set_aside": "?", "why": "unknown", "at": None}
