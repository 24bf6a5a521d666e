"""Push a local folder to a storage prefix, or pull a prefix into a folder.

A sync is two steps so the CLI can show (and a user can confirm) what will happen:

    plan = plan_push(storage, "photos/", "datasets/cat/")      # one listing + local hashing
    result = apply(plan, storage, workers=8, progress=print)   # parallel, bounded transfers
    # or simply: push(storage, "photos/", "datasets/cat/")

Why it works this way:

* Files are compared by size, then md5 (what GCS and the local store both record), so an
  unchanged tree plans nothing and a second sync costs one listing. Local md5s can be kept in a
  :class:`HashCache` keyed by (path, size, mtime_ns), so even hashing is skipped next time.
* Each file lands atomically (the storage's temporary-file-and-rename, or GCS's all-or-nothing
  upload), so an interrupted sync leaves whole old files or whole new files, and the next run
  simply plans the rest. A pull's files are made durable in batches (one ``syncfs`` per 16 MiB
  on a thread of its own, :class:`~.landing.DurableBatch`), not with an fsync each, and all of them
  before :func:`apply` returns or the hash cache vouches for them.
* Extras on the destination are deleted only when ``delete=True``, and only after every transfer
  succeeded. A mirror with deletes must name a folder below the top level (``datasets/cat/``,
  never ``""`` or ``datasets/``): :func:`check_delete_scope` refuses the rest, in planning and
  again in :func:`apply`, so no caller can skip it. Asking the user is the caller's part
  (``SyncPlan.deletes`` says what would go).
* Symlinks are followed only when they point inside the folder; keys that would escape the
  folder on pull (``..``, absolute paths) are refused and reported in ``SyncPlan.rejected``.

All of this blocks; run it in a thread from coroutine code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, NamedTuple

from ..errors import ConfigError, ObjectNotFound, StorageError
from .base import Checksums, ObjectInfo, Storage, checksum_file, clean_key, clean_prefix
from .landing import PARTIAL, DurableBatch, landing_file
from .layout import TOP_LEVEL
from .local import META_DIR

log = logging.getLogger(__name__)

#: a file below this size costs a round trip more than bandwidth: while such files are moving,
#: up to SMALL_FANOUT x ``workers`` go at once (capped by the storage's ``max_parallel``, its
#: connection pool), larger ones stay at ``workers`` (1,000 files of 50 KB)
SMALL_FILE = 1024 * 1024
SMALL_FANOUT = 4
#: a pull of small files from a storage with ``fetch_many`` (GCS) keeps up to this many x
#: ``workers`` requests in flight on one event loop (capped by the storage); what it did not land
#: goes the threaded way
BULK_FANOUT = 8


class Transfer(NamedTuple):
    """One file to move: ``rel`` is its path below the folder and below the prefix.

    A named tuple, not a frozen dataclass, which costs twice as much to make: a first upload of
    10,000 files makes 10,000 of them."""

    rel: str
    size: int
    checksums: Checksums | None = None  # of the local file, for uploads


@dataclass
class SyncPlan:
    direction: Literal["push", "pull"]
    local_dir: Path
    prefix: str
    transfers: list[Transfer] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)  # rel paths to remove from the destination
    skips: list[str] = field(default_factory=list)  # rel paths already identical
    rejected: list[str] = field(default_factory=list)  # names that cannot be synced safely

    @property
    def uploads(self) -> list[Transfer]:
        return self.transfers if self.direction == "push" else []

    @property
    def downloads(self) -> list[Transfer]:
        return self.transfers if self.direction == "pull" else []

    @property
    def bytes(self) -> int:
        return sum(t.size for t in self.transfers)

    @property
    def empty(self) -> bool:
        return not self.transfers and not self.deletes

    def to_dict(self) -> dict[str, object]:
        return {
            "direction": self.direction, "local_dir": str(self.local_dir), "prefix": self.prefix,
            "transfers": len(self.transfers), "bytes": self.bytes, "deletes": len(self.deletes),
            "skips": len(self.skips), "rejected": self.rejected,
        }


@dataclass(frozen=True)
class SyncResult:
    files: int
    bytes: int
    deleted: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"files": self.files, "bytes": self.bytes, "deleted": self.deleted, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Progress:
    """Passed to the progress callback after each finished file."""

    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    rel: str


ProgressFn = Callable[[Progress], None]


class HashCache:
    """Remembers local checksums by (absolute path, size, mtime_ns) in a small JSON file.

    Thread-safe; :meth:`save` writes atomically. A changed file (new size or mtime) misses, and
    only then is it hashed (:meth:`checksums`); :meth:`lookup` never hashes.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._data: dict[str, list] = {}
        self._dirty = False
        if self.path and self.path.is_file():
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(self.path.read_text())
                if isinstance(data, dict):
                    self._data = data

    @property
    def empty(self) -> bool:
        """Nothing remembered (yet): a lookup would miss."""
        return not self._data

    def reload(self) -> None:
        """Take in what another process saved to the file (entries here stay)."""
        if not self.path or not self.path.is_file():
            return
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if isinstance(data, dict):
                with self._lock:
                    for key, value in data.items():
                        self._data.setdefault(key, value)

    def lookup(self, key: str, size: int, mtime_ns: int) -> Checksums | None:
        """The checksums remembered for the file at absolute path ``key`` with this size and
        mtime, or None (nothing is read)."""
        hit = self._data.get(key)  # one dict read: atomic, no lock needed
        if isinstance(hit, list) and len(hit) == 4 and hit[0] == size and hit[1] == mtime_ns:
            return Checksums(size, hit[2], hit[3])
        return None

    def checksums(self, file: Path | str, st: "os.stat_result | LocalFile | None" = None,
                  key: str | None = None) -> Checksums:
        """The file's checksums: remembered, or computed now (and remembered). ``st`` and ``key``
        (its absolute resolved path) save the calls when the caller has them."""
        st = st or os.stat(file)
        key = key or str(Path(file).resolve())
        hit = self.lookup(key, st.st_size, st.st_mtime_ns)
        if hit is not None:
            return hit
        c = checksum_file(file)
        self.put(key, st, c)
        return c

    def remember(self, file: Path, c: Checksums, st: os.stat_result | None = None) -> None:
        """Record ``c`` for ``file`` as ``st`` describes it (default: as it is now)."""
        self.put(str(file.resolve()), st or file.stat(), c)

    def put(self, key: str, st: "os.stat_result | LocalFile", c: Checksums) -> None:
        with self._lock:
            self._data[key] = [st.st_size, st.st_mtime_ns, c.md5, c.crc32c]
            self._dirty = True

    def save(self) -> None:
        if not self.path or not self._dirty:
            return
        with self._lock:
            payload = json.dumps(self._data)
            self._dirty = False
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(payload)
            os.replace(tmp, self.path)
        except OSError as exc:
            # only a cache: a read-only or full home costs the next sync a re-hash, never the
            # transfer that just succeeded
            log.warning("could not save the checksum cache %s: %s", self.path, exc.strerror or exc)
            with contextlib.suppress(OSError):
                tmp.unlink()


def _normalise_prefix(prefix: str) -> str:
    prefix = clean_prefix(prefix)
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def check_delete_scope(prefix: str) -> None:
    """Refuse deleting extras under the whole store or a whole top-level folder.

    ``sync push DIR "" --delete`` would make the bucket mirror one folder, ``datasets/`` would
    drop every dataset, and a pull of ``""`` with delete would empty the local folder of all
    that is not in the bucket. A folder of its own (``datasets/<name>/``, ``models/flux/``) is
    fine."""
    norm = _normalise_prefix(prefix)
    if norm.count("/") >= 2:
        return
    what = "the whole bucket" if not norm else f"everything under {norm}"
    tops = ", ".join(repr(t) for t in ("", "/") + TOP_LEVEL)
    raise ConfigError(
        f"refusing to mirror with deletes over {what}: --delete needs a folder below the top level, "
        f"such as datasets/<name>/ (refused: {tops}, or any other single top-level folder)"
    )


class LocalFile(NamedTuple):
    """A regular file below a sync's folder, as one ``stat`` saw it: its size and mtime, not the
    ``stat`` result (one object fewer per file for the garbage collector to count: planning
    10,000 files set off full collections). ``st_size`` and ``st_mtime_ns`` let it stand in
    for the ``stat`` result where :class:`HashCache` wants one."""

    rel: str  # below the folder, ``/``-separated
    path: str  # absolute, below the folder's resolved path (the hash cache's key)
    size: int
    mtime_ns: int

    @property
    def st_size(self) -> int:
        return self.size

    @property
    def st_mtime_ns(self) -> int:
        return self.mtime_ns


def scan_local(root: Path) -> list[LocalFile]:
    """Regular files below ``root`` in a stable order, one ``stat`` each (``os.scandir``: the
    cheap walk planning needs). Symlinks are followed only when they stay inside the folder;
    symlinked folders, the local store's metadata folder and partial files are skipped."""
    return list(iter_local(root))


def iter_local(root: Path) -> Iterator[LocalFile]:
    """:func:`scan_local`, one file at a time (a first upload's plan keeps none of them)."""
    root_s = str(root.resolve())
    stack = [(root_s, "")]  # folders still to read, the next one last
    is_reg = stat.S_ISREG
    while stack:
        folder, rel_dir = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=_entry_name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):  # a real folder (a symlinked one is below)
                    if name != META_DIR:
                        subdirs.append((entry.path, rel_dir + name + "/"))
                    continue
                if name.startswith(PARTIAL):
                    continue
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if os.path.commonpath([target, root_s]) != root_s:
                        log.info("skipping symlink leaving the folder: %s", entry.path)
                        continue
                    st = entry.stat()  # follows a symlink that stays inside (to a folder: not regular)
                else:
                    st = os.lstat(entry.path)  # not entry.stat(): it would keep the result with the entry
            except (OSError, ValueError):
                continue
            if is_reg(st.st_mode):
                yield LocalFile(rel_dir + name, entry.path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))


_entry_name = operator.attrgetter("name")


def local_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(rel, path) of regular files below ``root``; symlinks only if they stay inside it."""
    for f in scan_local(Path(root)):
        yield f.rel, Path(f.path)


def _same(info: ObjectInfo, c: Checksums) -> bool:
    if info.size != c.size:
        return False
    if info.md5:
        return info.md5 == c.md5
    return info.crc32c == c.crc32c


def _valid_rel(rel: str) -> bool:
    try:
        clean_key(rel)
    except ConfigError:
        return False
    return True


def _escapes(root: Path, rel: str, memo: dict[str, bool] | None = None) -> bool:
    """True if writing ``root/rel`` would land outside ``root`` (through a symlinked folder).
    ``memo`` remembers the answer per folder for one pass (planning: many files, few folders)."""
    folder = rel.rpartition("/")[0]
    if memo is not None and folder in memo:
        return memo[folder]
    try:
        (root / rel).parent.resolve().relative_to(root.resolve())
        out = False
    except ValueError:
        out = True
    if memo is not None:
        memo[folder] = out
    return out


def plan_push(
    storage: Storage, local_dir: str | os.PathLike[str], prefix: str, *, delete: bool = False,
    cache: HashCache | None = None,
) -> SyncPlan:
    """What it takes to make ``prefix`` mirror ``local_dir`` (one listing of ``prefix``).

    Cheap: a file is hashed only when the destination holds an object of its size that the hash
    cache cannot vouch for; a new or resized file is sent as it is, and the upload hashes the
    bytes it sends (so a first upload reads each file once)."""
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"{root} is not a folder")
    prefix = _normalise_prefix(prefix)
    cache = cache or HashCache()
    remote = {o.key[len(prefix):]: o for o in storage.list(prefix).objects}
    plan = SyncPlan("push", root, prefix)
    transfers, skips = plan.transfers, plan.skips
    lookup = None if cache.empty else cache.lookup  # a new cache knows nothing: ask it nothing
    for f in iter_local(root):
        rel = f.rel
        if "\\" in rel:  # a walk never yields empty, "." or ".." parts; a backslash is the rest
            plan.rejected.append(rel)
            continue
        info = remote.get(rel) if remote else None
        if info is None or info.size != f.size:  # it must go: no need to know its hash yet
            transfers.append(Transfer(rel, f.size, lookup(f.path, f.size, f.mtime_ns) if lookup else None))
            continue
        c = cache.checksums(f.path, f, f.path)
        if _same(info, c):
            skips.append(rel)
        else:
            transfers.append(Transfer(rel, c.size, c))
    if delete:
        check_delete_scope(prefix)
        seen = {t.rel for t in transfers}.union(skips)
        plan.deletes = sorted(set(remote) - seen)
    return plan


def plan_pull(
    storage: Storage, prefix: str, local_dir: str | os.PathLike[str], *, delete: bool = False,
    cache: HashCache | None = None,
) -> SyncPlan:
    """What it takes to make ``local_dir`` mirror ``prefix`` (one listing of ``prefix``)."""
    root = Path(local_dir)
    if root.exists() and not root.is_dir():
        raise StorageError(f"{root} is not a folder")
    prefix = _normalise_prefix(prefix)
    if delete:
        check_delete_scope(prefix)
    cache = cache or HashCache()
    local = {f.rel: f for f in scan_local(root)} if root.is_dir() else {}
    plan = SyncPlan("pull", root, prefix)
    wanted: set[str] = set()
    memo: dict[str, bool] = {}
    for info in storage.list(prefix).objects:
        rel = info.key[len(prefix):]
        if rel.endswith("/") or not rel:  # "folder" placeholder objects
            continue
        unsafe = not _valid_rel(rel) or rel.split("/")[0] == META_DIR or rel.split("/")[-1].startswith(PARTIAL)
        if unsafe or _escapes(root, rel, memo):
            plan.rejected.append(rel)
            continue
        wanted.add(rel)
        have = local.get(rel)  # hashed only when its size matches and the cache cannot vouch
        if have is not None and have.size == info.size and _same(
                info, cache.checksums(have.path, have, have.path)):
            plan.skips.append(rel)
        else:
            plan.transfers.append(Transfer(rel, info.size))
    if delete:
        plan.deletes = sorted(set(local) - wanted)
    if plan.rejected:
        log.warning("not syncing %d object(s) with unsafe names under %s", len(plan.rejected), prefix)
    return plan


def apply(
    plan: SyncPlan, storage: Storage, *, workers: int = 8, progress: ProgressFn | None = None,
    cache: HashCache | None = None, clock: Callable[[], float] = time.monotonic,
) -> SyncResult:
    """Carry out ``plan`` with at most ``workers`` transfers at once (of files under
    :data:`SMALL_FILE`, up to ``SMALL_FANOUT`` x ``workers``, as far as the storage's
    ``max_parallel`` allows). A pull's small files go first through the storage's
    ``fetch_many`` where it has one (GCS: many GETs on one event loop, each verified, landed the
    same way); whatever that did not land goes the threaded way with the large ones.

    Stops scheduling at the first failure and raises it (files already moved stay; the next
    plan skips them). Deletes run only after every transfer succeeded.
    """
    if workers < 1:
        raise ConfigError("workers must be at least 1")
    if plan.deletes:  # a plan built or edited by hand gets the same rule
        check_delete_scope(plan.prefix)
    start = clock()
    total = plan.bytes
    lock = threading.Lock()
    state = {"bytes": 0, "files": 0}
    root_key = str(plan.local_dir.resolve()) if cache is not None else ""  # the cache's keys: as scan_local's

    escapes: dict[str, bool] = {}  # per folder, for this apply
    small, large = _by_size(plan.transfers)

    def inside(t: Transfer) -> Path:
        if _escapes(plan.local_dir, t.rel, escapes):  # a folder became a symlink since planning
            raise StorageError(f"refusing to write {t.rel!r}: it would land outside {plan.local_dir}")
        return plan.local_dir / t.rel

    durable = DurableBatch()  # a pull's files land without an fsync each: flushed in batches

    def pulled(t: Transfer, path: Path, info: ObjectInfo) -> None:
        durable.landed(path, t.size)
        if cache is not None and info.md5 and info.crc32c:  # verified bytes: no need to re-hash
            cache.put(os.path.join(root_key, t.rel), path.stat(), Checksums(info.size, info.md5, info.crc32c))
        moved(t)

    def moved(t: Transfer) -> None:
        with lock:
            state["bytes"] += t.size
            state["files"] += 1
            event = Progress(state["bytes"], total, state["files"], len(plan.transfers), t.rel)
        if progress:
            progress(event)

    fast = list(small)  # what fetch_many is asked for, by index

    def land(i: int, data: bytes, info: ObjectInfo) -> None:  # what the storage's fetch_many read
        t = fast[i]
        path = inside(t)
        try:
            with landing_file(path, fsync=False) as f:
                f.write(data)
        except OSError as exc:  # as download_file words it
            raise StorageError(f"cannot download {plan.prefix + t.rel!r} to {path}: {exc.strerror or exc}") from None
        pulled(t, path, info)

    def one(t: Transfer) -> None:
        if t.size >= SMALL_FILE and threads > workers:
            with big_slots:
                move(t)
        else:
            move(t)

    def move(t: Transfer) -> None:
        key = plan.prefix + t.rel
        if plan.direction == "push":
            path = plan.local_dir / t.rel
            before = path.stat() if cache is not None and t.checksums is None else None
            info = storage.upload_file(path, key, checksums=t.checksums)
            if before is not None and info.md5 and info.crc32c:  # the upload hashed it: remember
                after = path.stat()
                if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns) == (
                        info.size, before.st_mtime_ns):
                    cache.put(os.path.join(root_key, t.rel), before, Checksums(info.size, info.md5, info.crc32c))
            moved(t)
        else:
            path = inside(t)
            pulled(t, path, storage.download_file(key, path, fsync=False))

    fetch_many = getattr(storage, "fetch_many", None) if plan.direction == "pull" else None
    threads = workers
    big_slots = threading.BoundedSemaphore(workers)
    try:
        if small and callable(fetch_many):  # the storage's fast way for many small reads; the rest below
            left = fetch_many([plan.prefix + t.rel for t in fast], land, in_flight=workers * BULK_FANOUT,
                              max_size=SMALL_FILE)
            small = [fast[i] for i in left]
        if small:
            cap = getattr(storage, "max_parallel", None)  # a wrapper may hide it (or pass it on as a method)
            threads = max(workers, min(workers * SMALL_FANOUT, cap if isinstance(cap, int) else workers))
        todo = small + large
        if todo:
            run_all(one, todo, min(threads, len(todo)))  # small first: large ones wait for slots
    except BaseException:
        with contextlib.suppress(Exception):  # what landed stays good; the first error is the one to see
            durable.finish()
        raise
    durable.finish()  # what landed is durable before the deletes and before the hash cache vouches
    deleted = 0
    for rel in plan.deletes:
        if plan.direction == "push":
            with contextlib.suppress(ObjectNotFound):
                storage.delete(plan.prefix + rel)
                deleted += 1
        else:
            if not _valid_rel(rel) or _escapes(plan.local_dir, rel):  # never outside the folder
                log.warning("not deleting %r: it is not inside %s", rel, plan.local_dir)
                continue
            with contextlib.suppress(FileNotFoundError):
                (plan.local_dir / rel).unlink()
                deleted += 1
    if cache is not None:
        cache.save()
    return SyncResult(state["files"], state["bytes"], deleted, clock() - start)


def run_all(fn: Callable[[Transfer], None], items: list[Transfer], threads: int) -> None:
    """``fn`` on every item, from ``threads`` threads that take the next item as they finish one
    (no future per item: a sync of a thousand small files spent a third of its Python time
    making and waiting on futures). The first failure stops the taking and is raised once the
    running calls return; so is Ctrl-C (what has not started is dropped, running files finish)."""
    todo = iter(items)
    lock = threading.Lock()
    failed: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                item = None if failed else next(todo, None)
            if item is None:
                return
            try:
                fn(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                with lock:
                    failed.append(exc)
                return

    pool = [threading.Thread(target=worker, name=f"lora-cloud-sync-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    try:
        for t in pool:
            t.join()
    except BaseException as exc:  # Ctrl-C in the caller's thread
        with lock:
            failed.insert(0, exc)
        for t in pool:
            t.join()
    if failed:
        raise failed[0]


def _by_size(transfers: list[Transfer]) -> tuple[list[Transfer], list[Transfer]]:
    small = [t for t in transfers if t.size < SMALL_FILE]
    return small, [t for t in transfers if t.size >= SMALL_FILE]


def push(
    storage: Storage, local_dir: str | os.PathLike[str], prefix: str, *, delete: bool = False,
    workers: int = 8, progress: ProgressFn | None = None, cache: HashCache | None = None,
) -> SyncResult:
    """Make ``prefix`` mirror ``local_dir``: :func:`plan_push` then :func:`apply`."""
    plan = plan_push(storage, local_dir, prefix, delete=delete, cache=cache)
    return apply(plan, storage, workers=workers, progress=progress, cache=cache)


def pull(
    storage: Storage, prefix: str, local_dir: str | os.PathLike[str], *, delete: bool = False,
    workers: int = 8, progress: ProgressFn | None = None, cache: HashCache | None = None,
) -> SyncResult:
    """Make ``local_dir`` mirror ``prefix``: :func:`plan_pull` then :func:`apply`."""
    plan = plan_pull(storage, prefix, local_dir, delete=delete, cache=cache)
    return apply(plan, storage, workers=workers, progress=progress, cache=cache)
