"""A damaged state store: how to tell (:func:`damage_of`) and how to move it out of the way
(:func:`set_aside`), one process at a time (:func:`repairing`). :meth:`StateStore.open
<.state.StateStore.open>` uses these; nothing here deletes a file."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the second look still narrows the race
    fcntl = None  # type: ignore[assignment]

REBUILD_KEY = "state:rebuild_due"  # a store started in place of a damaged one: {"set_aside", "why", "at"}
SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's files beside the database, set aside with it


def is_damage(exc: sqlite3.Error) -> bool:
    """"file is not a database", "database disk image is malformed": the file itself is damaged
    (a lock, a full disk or a constraint is an OperationalError/IntegrityError, not damage)."""
    return type(exc) is sqlite3.DatabaseError


def make_private(path: Path) -> None:
    """Create the database file 0600 (it holds every cost record) before SQLite opens it, and
    narrow one an older version left wider. SQLite gives its ``-wal`` and ``-shm`` files the
    database file's mode, so those follow."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)


def damage_of(path: Path, timeout: float = 30.0) -> str | None:
    """Why the store at ``path`` cannot be used as a store (None: it can, or there is none yet).
    A lock or a full disk is not damage; only what no retry would mend is."""
    if not os.path.lexists(path):
        return None
    if path.is_dir():
        return "a folder is in its place"
    if not path.is_file():
        return "it is not a regular file"
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc) if is_damage(exc) else None
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.Error as exc:
        return str(exc) if is_damage(exc) else None
    finally:
        conn.close()
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "SQLite's check found: " + "; ".join(f[:200] for f in found)


@contextlib.contextmanager
def repairing(path: Path) -> Iterator[None]:
    """One process at a time looks again and sets a damaged store aside: without it, a process
    that saw the damage a moment late (ComfyUI's loop and a cron reconcile at once) would set
    aside the fresh store the other had just started, and what that one wrote there with it."""
    if fcntl is None:
        yield
        return
    with open(path.with_name(path.name + ".repair-lock"), "a+") as f:
        with contextlib.suppress(OSError):  # a file system without locks: the second look still helps
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def set_aside(path: Path, now: float) -> Path:
    """Rename the store at ``path`` (and its side files) out of the way, never deleting it:
    ``state.db.damaged-<UTC time>``. Returns where it went."""
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while os.path.lexists(aside):
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        n += 1
    os.replace(path, aside)
    for side in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path.with_name(path.name + side), aside.with_name(aside.name + side))
    return aside
