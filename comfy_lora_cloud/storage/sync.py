"""Push a local folder to a storage prefix, or pull a prefix into a folder.

A sync is two steps so the CLI can show (and a user can confirm) what will happen:

    plan = plan_push(storage, "photos/", "datasets/cat/")      # one listing + local hashing
    result = apply(plan, storage, workers=8, progress=print)   # parallel, bounded transfers
    # or simply: push(storage, "photos/", "datasets/cat/")

This module is the sync engine's public face: planning is :mod:`.sync_plan`, the local folder's
files :mod:`.local_tree`, the remembered checksums :mod:`.hash_cache`; carrying a plan out is here.

Why it works this way:

* Each file lands atomically (the storage's temporary-file-and-rename, or GCS's all-or-nothing
  upload), so an interrupted sync leaves whole old files or whole new files, and the next run
  simply plans the rest. A pull's files are made durable in batches (one ``syncfs`` per 16 MiB
  on a thread of its own, :class:`~.landing.DurableBatch`), not with an fsync each, and all of
  them before :func:`apply` returns or the hash cache vouches for them.
* Extras on the destination are deleted only when ``delete=True``, and only after every transfer
  succeeded; :func:`apply` checks the plan's delete scope again (:func:`check_delete_scope`).

All of this blocks; run it in a thread from coroutine code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, ObjectNotFound, StorageError
from .base import Checksums, ObjectInfo, Storage
from .hash_cache import HashCache
from .landing import DurableBatch, landing_file
from .local_tree import local_files, scan_local
from .sync_plan import SyncPlan, Transfer, check_delete_scope, escapes_folder, plan_pull, plan_push, valid_rel

__all__ = [  # what the rest of the pack reaches as ``sync.<name>``
    "BULK_FANOUT", "SMALL_FANOUT", "SMALL_FILE", "HashCache", "Progress", "ProgressFn", "SyncPlan", "SyncResult",
    "Transfer", "apply", "check_delete_scope", "local_files", "plan_pull", "plan_push", "pull", "push", "run_all",
    "scan_local",
]

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
        if escapes_folder(plan.local_dir, t.rel, escapes):  # a folder became a symlink since planning
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
            if not valid_rel(rel) or escapes_folder(plan.local_dir, rel):  # never outside the folder
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
