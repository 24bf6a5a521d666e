"""How bytes land on a local disk: each file written to a hidden partial beside its destination,
locked by its writer, then renamed into place; partials left by a writer that died are swept
later; a batch of files landed without an fsync each is made durable at once.

A reader never sees half a file, and a failed or corrupt transfer never replaces a good one. The
local storage, the GCS downloads and a sync's pulls all land their files here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

try:  # POSIX advisory locks: a partial's writer holds one while it writes (sweep_partials)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .base import pid_alive

LANDING_BUFFER = 64 * 1024  # landing_file's write buffer (below malloc's mmap threshold)
PARTIAL = ".lora-cloud-partial"  # prefix of a file still being written; listings skip it
#: ... and its suffix: half of ``cat.safetensors`` never ends in ``.safetensors``, so ComfyUI
#: (which lists a loras folder by suffix) never offers it as a LoRA
PARTIAL_SUFFIX = ".part"
#: a partial file untouched this long is left from a writer that died (on this machine or another
#: one sharing the folder), unless its writer still holds its lock; a partial whose writer process
#: is gone from this machine goes at once
PARTIAL_STALE_S = 30 * 60
# ".lora-cloud-partial-<pid>-<thread>.<name>.part", and the older ".lora-cloud-partial.<pid>.<thread>.<name>"
_PARTIAL_RE = re.compile(r"^" + re.escape(PARTIAL) + r"[.-](\d+)[.-]\d+\.")


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files below ``root`` in a stable order, skipping symlinks and temporary files."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file() or name.startswith(PARTIAL):
                continue
            yield p


def partial_path(dest: Path) -> Path:
    """Where ``dest``'s bytes are written before the rename: beside it (same file system), hidden,
    named after this process and thread, and not ending in ``dest``'s suffix."""
    return dest.with_name(f"{PARTIAL}-{os.getpid()}-{threading.get_ident()}.{dest.name}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def writing_partial(tmp: Path, buffering: int = -1) -> Iterator[BinaryIO]:
    """``tmp`` (a :func:`partial_path`) open for writing, with an exclusive lock held on it for as
    long as it is open: the writer's lock, which dies with the writer (a killed process drops
    it), so :func:`sweep_partials` never removes a partial a live writer still owns, however old.
    A missing folder is made when the open finds it missing (not checked before every file)."""
    try:
        f = open(tmp, "wb", buffering=buffering)
    except FileNotFoundError:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "wb", buffering=buffering)
    with f:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without locks: the pid and age rules stand
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield f


def _writer_holds(path: str) -> bool:
    """Whether a live writer holds the lock of the partial at ``path`` (:func:`writing_partial`)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the lock if we took it
    return False


def sweep_partials(folder: Path, *, stale_s: float = PARTIAL_STALE_S,
                   clock: Callable[[], float] = time.time) -> list[Path]:
    """Remove the partial files in ``folder`` (not below it) that no live writer owns: nobody
    holds the writer's lock (:func:`writing_partial`), and their writer process is gone from this
    machine or they are untouched for ``stale_s``. Returns what was removed. A partial whose
    writer still holds its lock is kept, however old; so is a fresh one whose writer runs here."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = clock()
    for entry in entries:
        m = _PARTIAL_RE.match(entry.name)
        if not m or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > stale_s
        except FileNotFoundError:
            continue
        if (old or not pid_alive(int(m.group(1)))) and not _writer_holds(entry.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def landing_file(dest: Path, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """A file to write ``dest``'s new bytes into: a temporary name beside it
    (:func:`partial_path`), fsynced and renamed onto ``dest`` when the block succeeds, removed
    when it raises. A reader never sees half a file, and a failed or corrupt transfer never
    replaces a good one. A process killed mid-block leaves the partial file behind;
    :func:`sweep_partials` removes it later.

    ``fsync=False`` is for a batch of many small files that the caller makes durable at once
    with :class:`DurableBatch` before anything vouches for them (a sync's hash cache): one flush
    instead of one per file, which was the biggest cost of pulling a thousand small files.

    Lean, as a sync lands hundreds of small files through it: the folder is created only when
    the open finds it missing, the buffer size is given (no terminal check; small enough to be
    no mapping of its own: larger writes go straight through it), and nothing is removed after a
    rename that succeeded."""
    tmp = partial_path(dest)
    landed = False
    try:
        with writing_partial(tmp, buffering=LANDING_BUFFER) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
        landed = True
    finally:
        if not landed:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def make_durable(paths: list[Path]) -> None:
    """Make the files at ``paths`` (all on one file system) durable, as an fsync of each would:
    Linux's ``syncfs`` of their file system, one call; elsewhere, or where it fails, ``fsync``
    of each (no ``sync``: it may wait on other disks, and macOS's returns before it is done)."""
    if not paths:
        return
    syncfs = _syncfs()
    if syncfs is not None:
        with contextlib.suppress(OSError):  # the folder went: the long way below says what is gone
            fd = os.open(Path(paths[0]).parent, os.O_RDONLY)
            try:
                if syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # replaced or removed meanwhile: not ours to keep
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class DurableBatch:
    """Files landed without an fsync of their own (``landing_file(..., fsync=False)``), made
    durable together: every ``every`` bytes a flush of what landed so far starts on a thread of
    its own, so the disk writes while the transfers go on, and :meth:`finish` flushes the rest
    and returns once all of it is durable (raising what a flush raised)."""

    def __init__(self, every: int = 16 * 1024 * 1024, flush: Callable[[list[Path]], None] | None = None):
        self.every = every
        self._flush_files = flush or make_durable
        self._lock = threading.Lock()
        self._batch: list[Path] = []
        self._bytes = 0
        self._flushes: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def landed(self, path: Path, size: int) -> None:
        with self._lock:
            self._batch.append(path)
            self._bytes += size
            if self._bytes < self.every:
                return
            batch, self._batch, self._bytes = self._batch, [], 0
            # one flush at a time: the next waits for the one before (a syncfs covers its files too)
            before = self._flushes[-1] if self._flushes else None
            flush = threading.Thread(target=self._flush, args=(batch, before), name="lora-cloud-flush", daemon=True)
            self._flushes.append(flush)
            flush.start()

    def _flush(self, batch: list[Path], before: threading.Thread | None) -> None:
        if before is not None:
            before.join()
        try:
            self._flush_files(batch)
        except BaseException as exc:  # noqa: BLE001 - raised by finish()
            self._errors.append(exc)

    def finish(self) -> None:
        with self._lock:
            batch, self._batch, self._bytes = self._batch, [], 0
            flushes = list(self._flushes)
        for flush in flushes:
            flush.join()
        if batch:
            self._flush_files(batch)
        if self._errors:
            raise self._errors[0]


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(fd)`` where there is one (Linux)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    except OSError:  # pragma: no cover - no libc to open
        return None
