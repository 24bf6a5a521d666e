"""The Storage protocol: a bucket of objects under keys, with checksums and generations.

Keys are ``/``-separated relative paths (``datasets/cat/001.png``); the layout is in
:mod:`comfy_lora_cloud.storage.layout`. All methods block: call them from threads
(:class:`AsyncStorage` does that for coroutine code), never on an event loop. How bytes land on
a local disk (partial files, the rename, durability) is :mod:`.landing`.

Every implementation must pass ``tests/contract/storage_contract.py``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Protocol, runtime_checkable

import google_crc32c

from .. import jsonsafe
from ..errors import ConfigError, CorruptRecord, StorageError

CHUNK = 1024 * 1024


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
