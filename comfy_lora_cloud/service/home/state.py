"""The state store: SQLite in WAL mode in the home folder.

Runs, instances and the cost ledger. ComfyUI, the CLI and the watchdog may use it at the same
moment (several processes, several threads): every call opens a short-lived connection with a
busy timeout, and every write is one transaction. The schema is versioned with
``PRAGMA user_version``; :data:`MIGRATIONS` is append-only.

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

import contextlib
import json
import logging
import math
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ...errors import ConfigError, CorruptRecord

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the second look below still narrows the race
    fcntl = None  # type: ignore[assignment]
from ...models import Cost, Instance, InstanceState, Run, RunState

MIGRATIONS: list[str] = [
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
]

SCHEMA_VERSION = len(MIGRATIONS)

log = logging.getLogger(__name__)
OnCorrupt = Callable[[CorruptRecord], None]


def _warn(exc: CorruptRecord) -> None:
    log.warning("skipped: %s", exc.message)


def _is_damage(exc: sqlite3.Error) -> bool:
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


REBUILD_KEY = "state:rebuild_due"  # a store started in place of a damaged one: {"set_aside", "why", "at"}
SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's files beside the database, set aside with it


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
        return str(exc) if _is_damage(exc) else None
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.Error as exc:
        return str(exc) if _is_damage(exc) else None
    finally:
        conn.close()
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "SQLite's check found: " + "; ".join(f[:200] for f in found)


@contextlib.contextmanager
def _repairing(path: Path) -> Iterator[None]:
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


class StateStore:
    @classmethod
    def open(cls, path: str | Path, *, timeout: float = 30.0, clock: Callable[[], float] = time.time) -> "StateStore":
        """The store at ``path``; a damaged one is set aside and a new one started in its place,
        marked for a rebuild (:meth:`rebuild_due`)."""
        path = Path(path)
        if damage_of(path, timeout) is None:
            return cls(path, timeout=timeout)
        with _repairing(path):
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

    def __init__(self, path: str | Path, *, timeout: float = 30.0):
        self.path = Path(path)
        self.timeout = timeout
        self.damage: str | None = None  # set when a call met a damaged file (App.state heals it)
        self.stands_for = self.path  # the home's store this one is (a temporary one may stand in: open)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        make_private(self.path)
        self._migrated = False
        try:
            self._migrate()
        except CorruptRecord as exc:  # every later call raises it again, with this message
            log.warning("%s", exc.message)

    # ---- plumbing ----------------------------------------------------------------------------
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
            raise self._damaged(exc) if _is_damage(exc) else exc
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA busy_timeout = %d" % int(self.timeout * 1000))
            yield conn
        except sqlite3.Error as exc:
            if _is_damage(exc):
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
                    for stmt in _split_sql(MIGRATIONS[i]):
                        conn.execute(stmt)
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

    # ---- runs --------------------------------------------------------------------------------
    def put_run(self, run: Run) -> Run:
        run.updated_at = time.time()
        d = run.to_dict()
        d["spec"] = json.dumps(d["spec"], sort_keys=True)
        cols = ", ".join(d)
        marks = ", ".join(f":{k}" for k in d)
        updates = ", ".join(f"{k}=excluded.{k}" for k in d if k != "id")
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}", d)
        return run

    def update_run(self, run_id: str, **fields: Any) -> Run:
        if "state" in fields and isinstance(fields["state"], RunState):
            fields["state"] = fields["state"].value
        if "spec" in fields:
            fields["spec"] = json.dumps(fields["spec"], sort_keys=True)
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        with self.transaction() as conn:
            cur = conn.execute(f"UPDATE runs SET {sets} WHERE id = :_id", {**fields, "_id": run_id})
            if cur.rowcount == 0:
                raise KeyError(run_id)
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> Run | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _row_to_run(row) if row else None

    def list_runs(self, *, live_only: bool = False, limit: int = 200, on_corrupt: OnCorrupt = _warn) -> list[Run]:
        """Runs newest first; a row that cannot be read is skipped and handed to ``on_corrupt``."""
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        runs = list(_readable(rows, _row_to_run, on_corrupt))
        return [r for r in runs if not r.state.is_terminal] if live_only else runs

    def find_run_by_hash(self, config_hash: str) -> Run | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT * FROM runs WHERE config_hash = ? ORDER BY created_at DESC LIMIT 1", (config_hash,)
            ).fetchone()
        return _row_to_run(row) if row else None

    def claim_run(self, run: Run, *, reuse_finished: bool = False) -> tuple[Run, bool]:
        """Insert ``run`` unless a run with the same ``config_hash`` is live (or, with
        ``reuse_finished``, finished well). Returns (the run that owns the hash, created?).

        One transaction, so two controllers queueing the same graph at the same moment end up
        with one run, not two rented machines."""
        run.updated_at = time.time()
        d = run.to_dict()
        d["spec"] = json.dumps(d["spec"], sort_keys=True)
        with self.transaction() as conn:
            for row in conn.execute(
                "SELECT * FROM runs WHERE config_hash = ? ORDER BY created_at DESC", (run.config_hash,)
            ).fetchall():
                existing = _row_to_run(row)
                if not existing.state.is_terminal or (reuse_finished and existing.state is RunState.DONE):
                    return existing, False
            cols = ", ".join(d)
            conn.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join(':' + k for k in d)})", d)
        return run, True

    # ---- instances ---------------------------------------------------------------------------
    def put_instance(self, inst: Instance, run_id: str | None = None, *, seen_at: float | None = None) -> None:
        """Insert or update an instance; ``seen_at`` (default: now) becomes its ``created_at`` the
        first time, on this controller's clock."""
        with self.transaction() as conn:
            self._upsert_instance(conn, inst, run_id, time.time() if seen_at is None else seen_at)

    def record_sightings(self, instances: Iterable[Instance], now: float) -> dict[str, float]:
        """Upsert every listed instance in one transaction; returns when this controller first saw
        each (its ``created_at``), so ages are measured on one clock: ours."""
        instances = list(instances)
        with self.transaction() as conn:
            for inst in instances:
                self._upsert_instance(conn, inst, inst.run_id, now)
            first: dict[str, float] = {}
            for inst in instances:
                row = conn.execute("SELECT created_at FROM instances WHERE provider = ? AND id = ?",
                                   (inst.provider, str(inst.id))).fetchone()
                seen = _finite(row[0]) if row else None
                if seen is None:  # a bad value: start counting again from now, and keep it from now on
                    conn.execute("UPDATE instances SET created_at = ? WHERE provider = ? AND id = ?",
                                 (now, inst.provider, str(inst.id)))
                    seen = now
                first[str(inst.id)] = seen
        return first

    @staticmethod
    def _upsert_instance(conn: sqlite3.Connection, inst: Instance, run_id: str | None, seen_at: float) -> None:
        data = {k: v for k, v in inst.to_dict().items() if k != "raw"}
        conn.execute(
                """INSERT INTO instances (id, provider, label, run_id, state, gpu_name, dph_total,
                       storage_dph, created_at, data)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(provider, id) DO UPDATE SET label=excluded.label,
                       run_id=COALESCE(excluded.run_id, instances.run_id), state=excluded.state,
                       gpu_name=excluded.gpu_name, dph_total=excluded.dph_total,
                       storage_dph=excluded.storage_dph, data=excluded.data""",
                (
                    str(inst.id), inst.provider, inst.label, run_id or inst.run_id,
                    InstanceState(inst.state).value, inst.gpu_name, inst.dph_total, inst.storage_dph,
                    seen_at, json.dumps(data, default=str),
                ),
            )

    def mark_instance_destroyed(self, provider: str, instance_id: str, at: float | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE instances SET state = 'destroyed', destroyed_at = ? WHERE provider = ? AND id = ?",
                (at or time.time(), provider, str(instance_id)),
            )

    def list_instances(self, *, include_destroyed: bool = False, on_corrupt: OnCorrupt = _warn) -> list[dict[str, Any]]:
        """Instance rows (plain dicts); a row whose numbers are not numbers is skipped."""
        q = "SELECT * FROM instances"
        if not include_destroyed:
            q += " WHERE state != 'destroyed'"
        with self.connect() as conn:
            rows = conn.execute(q + " ORDER BY id").fetchall()
        out = list(_readable(rows, _checked_instance_row, on_corrupt))
        out.sort(key=lambda r: r["created_at"])
        return out

    def seed_sightings(self, seen: dict[str, tuple[Instance, float]]) -> None:
        """Record when each instance was first seen (instance id -> (instance, time)); a time
        already recorded is only ever moved earlier, so an age never starts again from zero."""
        with self.transaction() as conn:
            for inst, at in seen.values():
                self._upsert_instance(conn, inst, inst.run_id, at)
                conn.execute("UPDATE instances SET created_at = MIN(created_at, ?) WHERE provider = ? AND id = ?",
                             (at, inst.provider, str(inst.id)))

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

    # ---- ledger ------------------------------------------------------------------------------
    def add_cost(self, cost: Cost) -> None:
        with self.transaction() as conn:
            conn.execute(
                'INSERT INTO ledger (instance_id, run_id, kind, usd, start, "end", source) VALUES (?,?,?,?,?,?,?)',
                (str(cost.instance_id), cost.run_id, cost.kind, cost.usd, cost.start, cost.end, cost.source),
            )

    def costs(self, *, since: float = 0.0, run_id: str | None = None, on_corrupt: OnCorrupt = _warn) -> list[Cost]:
        """Ledger lines; a line whose amount or times are not finite numbers is skipped."""
        q, args = 'SELECT * FROM ledger WHERE "end" >= ?', [since]
        if run_id is not None:
            q += " AND run_id = ?"
            args.append(run_id)
        with self.connect() as conn:
            rows = conn.execute(q + " ORDER BY start", args).fetchall()
        return list(_readable(rows, _row_to_cost, on_corrupt))

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
        value = _finite(raw)
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


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (text that is not a number, NaN, inf, None)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _readable(rows: Iterable[sqlite3.Row], decode: Callable[[sqlite3.Row], Any],
              on_corrupt: OnCorrupt) -> Iterator[Any]:
    for row in rows:
        try:
            yield decode(row)
        except CorruptRecord as exc:
            on_corrupt(exc)


def _row_to_run(row: sqlite3.Row) -> Run:
    d = dict(row)

    def corrupt(why: str) -> CorruptRecord:
        return CorruptRecord(f"run {str(d.get('id'))[:100]} in the state store has {why}", run_id=d.get("id"))

    try:
        state = RunState(d.get("state"))
    except ValueError:
        raise corrupt(f"an unknown state {str(d.get('state'))[:40]!r}") from None
    try:
        spec = json.loads(d.get("spec") or "{}")
    except ValueError:
        raise corrupt("a spec that is not JSON") from None
    if not isinstance(spec, dict):
        raise corrupt("a spec that is not a JSON object")
    for name in ("dph", "created_at", "updated_at"):
        value = _finite(d.get(name))
        if value is None:
            raise corrupt(f"{name} {str(d.get(name))[:40]!r}, not a number")
        d[name] = value
    d["state"], d["spec"] = state, spec
    return Run.from_dict(d)


def _checked_instance_row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for name in ("dph_total", "storage_dph", "created_at"):
        value = _finite(d.get(name))
        if value is None:
            raise CorruptRecord(f"instance {str(d.get('id'))[:40]} in the state store has {name} "
                                f"{str(d.get(name))[:40]!r}, not a number")
        d[name] = value
    if d.get("destroyed_at") is not None:
        d["destroyed_at"] = _finite(d["destroyed_at"])
    return d


def _row_to_cost(r: sqlite3.Row) -> Cost:
    numbers = [_finite(r[k]) for k in ("usd", "start", "end")]
    if any(v is None for v in numbers):
        raise CorruptRecord(f"ledger line {r['seq']} (instance {str(r['instance_id'])[:40]}) has an amount or "
                            "time that is not a number")
    usd, start, end = numbers
    return Cost(r["instance_id"], r["run_id"], r["kind"], usd, start, end, r["source"], seq=r["seq"])
