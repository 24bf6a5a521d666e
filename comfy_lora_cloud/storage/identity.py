"""Who a bucket is, and what time it is there.

**The bucket's id.** A random id kept in the bucket itself (:data:`ID_KEY`), created once by
the first home that launches from it. Instances launched from a bucket carry its id in their
run or session id (``providers/base.py``), so a home can tell its own bucket's instances from
another bucket's without the label naming the bucket: the id says nothing about the bucket's
name, and only a home that can read the bucket knows it. Two homes creating it at the same
moment agree: the write is "only if absent" (``if_generation_match=0``), and the loser reads the
winner's id.

**The bucket's clock.** How fresh a run's report is must be judged on the clock that dated the
report, the storage service's, never this machine's (a laptop whose clock runs 40 min fast
would read every live run as silent). :func:`bucket_time` writes a tiny object and takes the
time the service put on it (GCS: the object's ``updated``; a local folder: the file's mtime,
set by the file system).

Blocking, like every storage call.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from .. import jsonsafe
from ..errors import CorruptRecord, ObjectNotFound, PreconditionFailed, StorageError
from .base import Storage

ID_KEY = ".lora-cloud/bucket-id.json"
CLOCK_KEY = ".lora-cloud/clock"
ID_HEX = 12  # 48 random bits: no two buckets of one account meet on it
_ID_RE = re.compile(r"[0-9a-f]{%d}\Z" % ID_HEX)
_MAX_ID_BYTES = 4096


def is_bucket_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.match(value) is not None


def new_bucket_id() -> str:
    return secrets.token_hex(ID_HEX // 2)


def read_bucket_id(storage: Storage) -> str | None:
    """The bucket's id, or None when it has none yet. :class:`CorruptRecord` when the object is
    not an id (never replaced: whoever wrote it may be relying on it)."""
    try:
        raw = storage.read_bytes(ID_KEY)
    except ObjectNotFound:
        return None
    return _parse(raw)


def ensure_bucket_id(storage: Storage, *, prefer: str | None = None) -> str:
    """The bucket's id, created when it has none: ``prefer`` (an id this home read from the
    bucket before, so a deleted id object comes back as it was) or a new random one. Of two
    homes creating it at once, one write wins and both return its id."""
    for _ in range(5):
        current = read_bucket_id(storage)
        if current is not None:
            return current
        new = prefer if is_bucket_id(prefer) else new_bucket_id()
        try:
            storage.write_bytes(ID_KEY, json.dumps({"id": new, "created_at": time.time()}).encode(),
                                if_generation_match=0, content_type="application/json")
        except PreconditionFailed:
            continue  # another home created it between our read and our write: read theirs
        return new
    raise StorageError(f"the bucket's id ({ID_KEY}) keeps changing under us; try again")


def _parse(raw: bytes) -> str:
    what = f"the bucket's id ({ID_KEY})"
    if len(raw) > _MAX_ID_BYTES:
        raise CorruptRecord(f"{what} is {len(raw)} bytes, not an id", key=ID_KEY)
    try:
        data = jsonsafe.loads(raw, max_bytes=_MAX_ID_BYTES)
    except ValueError:
        raise CorruptRecord(f"{what} is not JSON", key=ID_KEY) from None
    value = data.get("id") if isinstance(data, dict) else None
    if not is_bucket_id(value):
        raise CorruptRecord(f"{what} holds no id of {ID_HEX} hex digits", key=ID_KEY)
    return value


@dataclass(frozen=True)
class BucketTime:
    bucket: float  # the storage service's time of the write
    local: float  # this machine's clock at the same moment (the middle of the write)

    @property
    def skew_s(self) -> float:
        """How far this machine's clock runs ahead of the bucket's (negative: behind)."""
        return self.local - self.bucket


def bucket_time(storage: Storage, clock: Callable[[], float] = time.time) -> BucketTime:
    """Now, on the bucket's clock: the time the service put on a write made just now.
    :class:`StorageError` when it cannot be learnt."""
    before = clock()
    info = storage.write_bytes(CLOCK_KEY, b"", content_type="text/plain")
    after = clock()
    written = info.updated if info.updated is not None else storage.stat(CLOCK_KEY).updated
    if written is None:
        raise StorageError(f"the bucket put no time on {CLOCK_KEY}")
    return BucketTime(bucket=float(written), local=(before + after) / 2)
