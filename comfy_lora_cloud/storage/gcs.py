"""Google Cloud Storage through the official ``google-cloud-storage`` client.

Why these choices:

* The client is imported lazily, so the pack loads without the ``gcs`` dependency and fails with
  a pip hint only when a ``gs://`` URL is used (:mod:`.gcs_client`, with the credentials:
  ``STORAGE_EMULATOR_HOST`` means anonymous ones, otherwise a service-account JSON from the
  secrets file, otherwise application-default credentials).
* One retry policy, :func:`~.gcs_errors.is_retriable` (429, 5xx, connection resets), is passed to
  every call, uploads included: our uploads carry the same bytes on every attempt, so a repeat is
  harmless, and a generation precondition still protects an overwrite.
* Every transfer is verified: uploads compare the checksums GCS reports with the local ones (a
  mismatch deletes the bad object again; :mod:`.gcs_upload`), downloads hash the bytes as they
  arrive and compare with the ``X-Goog-Hash`` header (or the object's metadata), into a temporary
  file renamed into place (:mod:`.gcs_download`).
* Google's exceptions are translated in one place, :meth:`GcsStorage._translate` (through
  :func:`~.gcs_errors.raise_translated`), and messages never carry the library's text (it can
  include URLs and headers), only what we compose.

Blocking: call from threads (:class:`~comfy_lora_cloud.storage.base.AsyncStorage`), never on an
event loop.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

from ..errors import BucketNotFound, ChecksumMismatch, ConfigError, ObjectNotFound, StorageError
from .base import Listing, ObjectInfo, clean_key, clean_prefix
from .gcs_client import POOL_SIZE, api_base_url, make_client
from .gcs_download import BULK_IN_FLIGHT, GcsDownloads
from .gcs_errors import make_retry, raise_translated
from .gcs_hashes import b64_to_hex
from .gcs_upload import CHUNK_SIZE, CLIENT_MULTIPART_MAX, MEMORY_BUDGET, GcsUploads, MemoryBudget

if TYPE_CHECKING:
    from ..settings import Settings

T = TypeVar("T")

PAGE_SIZE = 1000


class GcsStorage(GcsUploads, GcsDownloads):
    """A bucket (optionally below a prefix) as a :class:`~comfy_lora_cloud.storage.base.Storage`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        settings: "Settings | None" = None,
        retry: Any = None,
        chunk_size: int = CHUNK_SIZE,
        page_size: int = PAGE_SIZE,
        memory_budget: int = MEMORY_BUDGET,
    ):
        if not bucket or "/" in bucket:
            raise ConfigError(f"invalid bucket name {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            clean_key(prefix)
            prefix += "/"
        if chunk_size % (256 * 1024):
            raise ConfigError("chunk_size must be a multiple of 256 KiB")
        self.bucket_name = bucket
        self.prefix = prefix
        self.url = f"gs://{bucket}/{prefix}".rstrip("/")
        self.client = client if client is not None else make_client(settings)
        self.retry = retry if retry is not None else make_retry()
        self.chunk_size = chunk_size
        #: files up to this size go in one request
        self.single_request_max = max(chunk_size, CLIENT_MULTIPART_MAX)
        self.page_size = page_size
        self._memory = MemoryBudget(max(memory_budget, self.single_request_max))
        self._bucket = self.client.bucket(bucket)
        self._bucket_seen = False
        #: the most requests a sync sends at once (small files; see sync.apply)
        self.max_parallel = POOL_SIZE
        #: the most GETs :meth:`fetch_many` keeps in flight on its event loop
        self.max_in_flight = BULK_IN_FLIGHT

    @classmethod
    def from_url(cls, url: str, *, settings: "Settings | None" = None, **kwargs: Any) -> "GcsStorage":
        """``gs://bucket[/prefix]``; the prefix is prepended to every key."""
        if not url.startswith("gs://"):
            raise ConfigError(f"not a gs:// URL: {url!r}")
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise ConfigError("gs:// URL needs a bucket name, e.g. gs://my-bucket/lora")
        return cls(bucket, prefix, settings=settings, **kwargs)

    # ---- helpers ----------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        return self.prefix + clean_key(key)

    def _key(self, name: str) -> str:
        return name[len(self.prefix):]

    @functools.cached_property
    def _api_base(self) -> str:
        """The API's base URL (read once: the client works it out from the environment on every
        call, a fifth of a small download's Python time)."""
        return api_base_url(self.client._connection)

    def _info(self, blob: Any, key: str | None = None) -> ObjectInfo:
        updated = _timestamp(blob)
        return ObjectInfo(
            key=key if key is not None else self._key(blob.name),
            size=int(blob.size or 0),
            md5=b64_to_hex(blob.md5_hash),
            crc32c=blob.crc32c,
            generation=int(blob.generation) if blob.generation is not None else None,
            updated=updated,
            metadata=dict(blob.metadata) if blob.metadata else None,
        )

    def _bucket_exists(self) -> bool:
        if self._bucket_seen:
            return True
        try:
            seen = bool(self._bucket.exists(retry=self.retry))
        except Exception as exc:  # noqa: BLE001 - translated below
            self._translate(exc, "bucket")
        self._bucket_seen = seen
        return seen

    def _missing_bucket(self) -> BucketNotFound:
        return BucketNotFound(
            f"bucket {self.bucket_name!r} does not exist or is not visible with these credentials "
            f"(storage is {self.url}; create it or fix LORA_CLOUD_STORAGE)"
        )

    def _translate(self, exc: BaseException, key: str | None) -> NoReturn:
        """Map a google/requests exception to our error tree (:func:`.gcs_errors.raise_translated`,
        the one place that does), a 404 as a missing object or, when it is gone, a missing bucket."""
        what = f"{key!r} in {self.url}" if key else self.url

        def not_found() -> Exception:
            if key is None or not self._bucket_exists():
                return self._missing_bucket()
            return ObjectNotFound(f"no object {what}")

        raise_translated(exc, what, self.url, not_found)

    def _call(self, fn: Callable[[], T], key: str | None) -> T:
        try:
            return fn()
        except (ChecksumMismatch, ConfigError):
            raise
        except Exception as exc:  # noqa: BLE001 - every foreign error goes through _translate
            self._translate(exc, key)

    # ---- Storage protocol --------------------------------------------------------------------
    def stat(self, key: str) -> ObjectInfo:
        blob = self._bucket.blob(self._name(key))
        self._call(lambda: blob.reload(retry=self.retry), key)
        return self._info(blob, key)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "", delimiter: str | None = None, *, match_glob: str | None = None) -> Listing:
        full = self.prefix + clean_prefix(prefix)
        extra = {"match_glob": self.prefix + match_glob} if match_glob else {}

        def run() -> Listing:
            it = self.client.list_blobs(
                self._bucket, prefix=full or None, delimiter=delimiter,
                page_size=self.page_size, retry=self.retry, **extra,
            )
            objects = [self._info(b) for page in it.pages for b in page]
            prefixes = sorted(self._key(p) for p in it.prefixes)
            return Listing(sorted(objects, key=lambda o: o.key), prefixes)

        listing = self._call(run, None)
        self._bucket_seen = True
        return listing

    def delete(self, key, *, if_generation_match=None) -> None:
        blob = self._bucket.blob(self._name(key))
        self._call(lambda: blob.delete(if_generation_match=if_generation_match, retry=self.retry), key)

    def delete_prefix(self, prefix: str) -> int:
        prefix = clean_prefix(prefix)
        if not prefix and not self.prefix:
            raise StorageError("refusing to delete the whole bucket")
        n = 0
        for obj in self.list(prefix).objects:
            with contextlib.suppress(ObjectNotFound):
                self.delete(obj.key)
                n += 1
        return n


def _timestamp(blob: Any) -> float | None:
    """When ``blob`` was last written, as a POSIX time: its RFC 3339 ``updated`` read with
    ``fromisoformat`` (the client's ``strptime`` was a tenth of a 1,000-object listing's time)."""
    from datetime import datetime

    raw = blob._properties.get("updated") if isinstance(getattr(blob, "_properties", None), dict) else None
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    return blob.updated.timestamp() if blob.updated is not None else None  # another shape: the client's parser
