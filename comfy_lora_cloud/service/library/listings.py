"""Listings that cost O(pages), not O(items): the one home of paging a listing and of reading
the details of the entries shown.

How datasets, LoRAs and runs are listed (:func:`.library.list_datasets`,
:func:`.library.list_loras`, :meth:`.runs.Runs.listing`):

* one paged listing of their prefix (the storage client fetches every page, 1,000 objects a
  page on GCS); counts, sizes and "is there a manifest" come from the object names and sizes in
  it, never from a request per entry;
* the entries are sorted, and only the page asked for (:class:`Page`) gets its details read: a
  dataset's manifest, a LoRA's sidecar, a run's status;
* those reads run in parallel (:func:`read_records`), one request each (the listing already
  gave the size and generation, so no ``stat``), and are remembered by (storage, key,
  generation) in :data:`RECORDS`: an object that did not change is never read twice, a rewritten
  one has a new generation and is read again.

Bucket content stays untrusted: a record that cannot be read as what it should be is reported
by the caller in ``problems`` (and remembered as such for its generation); a failure to reach the
bucket is not remembered.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

from ...errors import ConfigError, CorruptRecord
from ...storage import Storage
from ...storage.base import MAX_RECORD_BYTES, ObjectInfo, read_listed_record

T = TypeVar("T")

#: the most entries one page may hold (routes and the CLI refuse more)
MAX_PAGE = 1000


@dataclass(frozen=True)
class Page:
    """Which slice of a sorted listing to show: ``limit`` None means all of it."""

    offset: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ConfigError("offset must be an integer >= 0")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or not 1 <= self.limit <= MAX_PAGE):
            raise ConfigError(f"limit must be between 1 and {MAX_PAGE}")

    def of(self, items: Sequence[T]) -> list[T]:
        end = None if self.limit is None else self.offset + self.limit
        return list(items[self.offset:end])

    def describe(self, total: int) -> dict[str, Any]:
        """``{"total", "offset", "limit"}`` for an answer, so a caller can ask for the next page."""
        return {"total": total, "offset": self.offset, "limit": self.limit}


class RecordCache:
    """Parsed small records by (storage url, key, generation), least recently used out first.

    A generation names one version of an object's bytes (GCS; the local store keeps its own), so
    a hit is the same bytes parsed the same way: nothing is ever stale. Thread-safe."""

    def __init__(self, size: int = 20_000):
        self.size = size
        self._lock = threading.Lock()
        self._data: OrderedDict[tuple[str, str, str, int], tuple[bool, Any]] = OrderedDict()
        self.reads = 0  # records fetched from storage (what the cache saved is the rest)

    def get(self, key: tuple[str, str, str, int]) -> tuple[bool, Any] | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
            return hit

    def put(self, key: tuple[str, str, str, int], value: tuple[bool, Any]) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


#: the process's one record cache (ComfyUI's app, and each CLI command)
RECORDS = RecordCache()


@dataclass(frozen=True)
class Read(Generic[T]):
    """What reading one record gave: ``value``, or the ``error`` that says why not."""

    info: ObjectInfo
    value: T | None = None
    error: Exception | None = None


def read_records(storage: Storage, infos: Sequence[ObjectInfo], parse: Callable[[bytes, str], T], *,
                 kind: str, workers: int = 16, max_bytes: int = MAX_RECORD_BYTES,
                 cache: RecordCache | None = None) -> list[Read[T]]:
    """Read and ``parse`` the records ``infos`` describe (from a listing), in parallel, through
    the cache. ``kind`` names the parser in the cache key (the same object parsed two ways is
    two entries). A :class:`~comfy_lora_cloud.errors.StorageError` (:class:`CorruptRecord`,
    :class:`ObjectNotFound`, the bucket out of reach) comes back as the entry's ``error``;
    only a corrupt record is remembered."""
    cache = RECORDS if cache is None else cache
    url = storage.url
    out: list[Read[T] | None] = [None] * len(infos)
    todo: list[int] = []
    for i, info in enumerate(infos):
        hit = cache.get((url, kind, info.key, info.generation)) if info.generation else None
        if hit is None:
            todo.append(i)
        else:
            ok, value = hit
            out[i] = Read(info, value=value) if ok else Read(info, error=value)

    def one(i: int) -> Read[T]:
        from ...errors import StorageError

        info = infos[i]
        try:
            value = parse(read_listed_record(storage, info, max_bytes), info.key)
        except CorruptRecord as exc:
            if info.generation:
                cache.put((url, kind, info.key, info.generation), (False, exc))
            return Read(info, error=exc)
        except StorageError as exc:
            return Read(info, error=exc)
        finally:
            with cache._lock:
                cache.reads += 1
        if info.generation:
            cache.put((url, kind, info.key, info.generation), (True, value))
        return Read(info, value=value)

    if len(todo) == 1:
        out[todo[0]] = one(todo[0])
    elif todo:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))),
                                thread_name_prefix="lora-cloud-records") as pool:
            for i, result in zip(todo, pool.map(one, todo)):
                out[i] = result
    return out  # type: ignore[return-value]
