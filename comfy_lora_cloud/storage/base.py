"""The Storage protocol: a bucket of objects under keys, with checksums and generations.

Keys are ``/``-separated relative paths (``datasets/cat/001.png``); the layout is in
:mod:`comfy_lora_cloud.storage.layout`. All methods block: call them from threads
(:class:`AsyncStorage` does that for coroutine code), never on an event loop.

Every implementation must pass ``tests/contract/storage_contract.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Protocol, runtime_checkable

try:  # POSIX advisory locks: a partial's writer holds one while it writes (sweep_partials)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import google_crc32c

from .. import jsonsafe
from ..errors import ConfigError, CorruptRecord, StorageError

CHUNK = 1024 * 1024
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


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    md5: str | None = None  # hex
    crc32c: str | None = None  # base64 of the big-endian uint32, as GCS reports it
    generation: int | None = None
    updated: float | None = None
    metadata: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "md5": self.md5,
            "crc32c": self.crc32c,
            "generation": self.generation,
            "updated": self.updated,
        }


@dataclass(frozen=True)
class Listing:
    objects: list[ObjectInfo]
    prefixes: list[str]


@dataclass(frozen=True)
class Checksums:
    size: int
    md5: str
    crc32c: str


def checksum_file(path: str | os.PathLike[str]) -> Checksums:
    md5 = hashlib.md5(usedforsecurity=False)
    crc = google_crc32c.Checksum()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            crc.update(chunk)
            size += len(chunk)
    return Checksums(size, md5.hexdigest(), base64.b64encode(crc.digest()).decode())


def checksum_bytes(data: bytes) -> Checksums:
    crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    return Checksums(len(data), hashlib.md5(data, usedforsecurity=False).hexdigest(), crc)


def clean_key(key: str) -> str:
    """Normalise and check an object key: relative, no ``..``, no empty parts, no NUL."""
    if not isinstance(key, str) or not key:
        raise ConfigError("object key must be a non-empty string")
    if "\x00" in key or "\\" in key:
        raise ConfigError(f"invalid object key {key!r}")
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(f"invalid object key {key!r}")
    return key


def glob_regex(pattern: str) -> "re.Pattern[str]":
    """GCS's ``matchGlob`` (``*``, ``**``, ``?``; the rest literal) as a regular expression."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def clean_prefix(prefix: str) -> str:
    """A listing prefix: '' (everything) or a key-like string, optionally ending with '/'."""
    if prefix in ("", None):
        return ""
    body = prefix[:-1] if prefix.endswith("/") else prefix
    clean_key(body)
    return prefix


@runtime_checkable
class Storage(Protocol):
    """What the rest of the pack needs from a bucket."""

    url: str

    def stat(self, key: str) -> ObjectInfo:
        """Metadata of one object; :class:`ObjectNotFound` if missing."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "", delimiter: str | None = None, *, match_glob: str | None = None) -> Listing:
        """Every object under ``prefix`` (all pages). With ``delimiter='/'`` only the direct
        children, plus the sub-prefixes in ``Listing.prefixes``. With ``match_glob`` (GCS's
        syntax, relative to the storage's root: ``*`` stays within one folder, ``**`` crosses
        folders, ``?`` is one character) only the objects whose key matches, e.g.
        ``runs/*/status.json``: one paged listing instead of one request per folder."""

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes, verified against its checksum."""

    def write_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Write an object. ``if_generation_match=0`` means "only if it does not exist";
        a mismatch raises :class:`PreconditionFailed`."""

    def upload_file(
        self,
        path: str | os.PathLike[str],
        key: str,
        *,
        if_generation_match: int | None = None,
        content_type: str | None = None,
        checksums: Checksums | None = None,
    ) -> ObjectInfo:
        """Upload a local file (resumable for large files), verified by checksum."""

    def download_file(self, key: str, path: str | os.PathLike[str], *, fsync: bool = True) -> ObjectInfo:
        """Download to ``path`` through a temporary file and a rename, verified by checksum;
        ``fsync=False`` leaves making it durable to the caller (a sync's :class:`DurableBatch`)."""

    def delete(self, key: str, *, if_generation_match: int | None = None) -> None:
        """Delete one object; :class:`ObjectNotFound` if missing."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many."""


class UnavailableStorage:
    """Storage that could not be opened (no credentials, a bad URL): every call raises the
    :class:`StorageError` it was given. The guard runs over it, so the budgets are enforced
    while the bucket is out of reach, and every run reads as "cannot vouch" (never destroyed
    on that doubt)."""

    def __init__(self, url: str, error: "StorageError"):
        self.url = url
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


class AsyncStorage:
    """Runs each blocking :class:`Storage` call in a worker thread.

    ``await AsyncStorage(s).list("datasets/", "/")`` never blocks the event loop.
    """

    def __init__(self, storage: Storage):
        self.sync = storage
        self.url = storage.url

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self.sync, name)
        if not callable(fn):
            return fn

        @functools.wraps(fn)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kwargs)

        return call


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files below ``root`` in a stable order, skipping symlinks and temporary files."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file() or name.startswith(PARTIAL):
                continue
            yield p


def copy_stream(src: BinaryIO, dst: BinaryIO) -> Checksums:
    md5 = hashlib.md5(usedforsecurity=False)
    crc = google_crc32c.Checksum()
    size = 0
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        md5.update(chunk)
        crc.update(chunk)
        size += len(chunk)
    return Checksums(size, md5.hexdigest(), base64.b64encode(crc.digest()).decode())


def partial_path(dest: Path) -> Path:
    """Where ``dest``'s bytes are written before the rename: beside it (same file system), hidden,
    named after this process and thread, and not ending in ``dest``'s suffix."""
    return dest.with_name(f"{PARTIAL}-{os.getpid()}-{threading.get_ident()}.{dest.name}{PARTIAL_SUFFIX}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as alive until reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True  # cannot tell: keep what might be in use
    return True


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


MAX_RECORD_BYTES = 4 * 1024 * 1024  # status.json, manifests, sidecars: a few KB when honest


def read_json_record(storage: "Storage", key: str, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """A JSON record from the bucket (status, manifest, LoRA sidecar), read as untrusted input.

    The size is checked with ``stat`` before any byte is fetched: a host that writes a 1 GB
    ``status.json`` must not make every poll download it (egress is billed to the user). Bytes
    that are not UTF-8 JSON, or nest past the parser's limit, are :class:`CorruptRecord`;
    :class:`ObjectNotFound` passes through. What the JSON holds is the caller's to check.
    """
    return parse_json_record(read_record_bytes(storage, key, max_bytes), key)


def parse_json_record(data: bytes, key: str) -> Any:
    """A record's bytes as JSON (:func:`~..jsonsafe.loads`): :class:`CorruptRecord` for bytes
    that are not UTF-8 JSON, that nest deeper than a record does, or that hold a number our
    arithmetic cannot take (NaN, Infinity, 1e400, a 401-digit integer)."""
    try:
        return jsonsafe.loads(data)
    except ValueError as exc:
        raise CorruptRecord(f"{key} is not valid JSON ({exc})") from None


def read_listed_record(storage: "Storage", info: ObjectInfo, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
    """A small record's bytes, for an object a listing just described (so no ``stat``: one
    request, not two). Refused from the listing's size when over ``max_bytes``; where the
    storage can read one generation (GCS), exactly the listed generation is read, so an object
    swapped for a huge one after the listing is not downloaded (:class:`ObjectNotFound` then).
    The length read is checked again in any case."""
    if info.size > max_bytes:
        raise CorruptRecord(f"{info.key} is {info.size} bytes, more than a record may be ({max_bytes})")
    reader = getattr(storage, "read_generation", None)
    if reader is not None and info.generation:
        data = reader(info.key, info.generation)
    else:
        data = storage.read_bytes(info.key)
    if len(data) > max_bytes:
        raise CorruptRecord(f"{info.key} is {len(data)} bytes, more than a record may be ({max_bytes})")
    return data


def read_record_bytes(storage: "Storage", key: str, max_bytes: int = MAX_RECORD_BYTES) -> bytes:
    """A small record's bytes, refused as :class:`CorruptRecord` from ``stat`` (before any byte
    is fetched) when it is over ``max_bytes``; :class:`ObjectNotFound` passes through."""
    info = storage.stat(key)
    if info.size > max_bytes:
        raise CorruptRecord(f"{key} is {info.size} bytes, more than a record may be ({max_bytes})")
    return storage.read_bytes(key)

