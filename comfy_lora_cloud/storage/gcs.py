"""Google Cloud Storage through the official ``google-cloud-storage`` client.

Why these choices:

* The client is imported lazily, so the pack loads without the ``gcs`` dependency and fails with
  a pip hint only when a ``gs://`` URL is used.
* ``STORAGE_EMULATOR_HOST`` (tests, gcp-storage-emulator) means anonymous credentials; otherwise a
  service-account JSON from the secrets file, otherwise application-default credentials.
* One retry policy, :func:`is_retriable` (429, 5xx, connection resets), is passed to every call,
  uploads included: our uploads carry the same bytes on every attempt, so a repeat is harmless,
  and a generation precondition still protects an overwrite.
* Every transfer is verified: uploads compare the checksums GCS reports with the local ones (a
  mismatch deletes the bad object again), downloads hash the bytes as they arrive and compare with
  the ``X-Goog-Hash`` header (or the object's metadata), into a temporary file renamed into place.
* Google's exceptions are translated in one place, :meth:`GcsStorage._translate`, and messages
  never carry the library's text (it can include URLs and headers), only what we compose.

Blocking: call from threads (:class:`~comfy_lora_cloud.storage.base.AsyncStorage`), never on an
event loop.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import inspect
import io
import json
import mimetypes
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, NoReturn, TypeVar

import google_crc32c

from ..errors import BucketNotFound, ChecksumMismatch, ConfigError, ObjectNotFound, PreconditionFailed, StorageError
from .base import Checksums, Listing, ObjectInfo, checksum_bytes, checksum_file, clean_key, clean_prefix
from .landing import landing_file

if TYPE_CHECKING:
    import ssl

    from ..settings import Settings

T = TypeVar("T")

#: A file up to one chunk goes in ONE multipart request (its checksums in the request, so GCS
#: refuses bytes that differ); a larger one through a resumable session in pieces of this size
#: (a multiple of 256 KiB, a GCS rule), so a dropped connection costs at most one chunk. The
#: client's own rule (multipart only up to 8 MiB, then 8 MiB chunks) cost a 20 MB file four
#: requests where one does (82 requests for 20 files against transfer_manager's 41).
CHUNK_SIZE = 32 * 1024 * 1024
#: the client's multipart limit, which one request always covers
CLIENT_MULTIPART_MAX = 8 * 1024 * 1024
#: bytes of file content held in memory at once by one storage's uploads (a single-request
#: upload holds its file, a resumable one its chunk); more waits
MEMORY_BUDGET = 256 * 1024 * 1024
#: bytes a download reads from the socket at a time
DOWNLOAD_READ = 1024 * 1024
#: (connect, read) seconds for a download's GET
_MEDIA_TIMEOUT = (60, 120)
PAGE_SIZE = 1000
#: connections :func:`make_client` keeps per host: the most requests a sync sends at once
#: (:attr:`GcsStorage.max_parallel`)
POOL_SIZE = 64
#: GETs :meth:`GcsStorage.fetch_many` keeps in flight: one event loop carries many more than
#: threads could, and a connection each is within any machine's file limit
#: (:func:`_descriptor_room`)
BULK_IN_FLIGHT = 128
_RETRIABLE_STATUS = {408, 429, 500, 502, 503, 504}


def _import_gcs() -> Any:
    try:
        from google.cloud import storage
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError(
            "gs:// storage needs google-cloud-storage>=3: pip install -U google-cloud-storage"
        ) from None
    return storage


def is_retriable(exc: BaseException) -> bool:
    """The only retry policy: throttling, server errors and dropped connections."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth_exc

    if isinstance(exc, (api.TooManyRequests, api.InternalServerError, api.BadGateway,
                        api.ServiceUnavailable, api.GatewayTimeout)):
        return True
    if isinstance(exc, api.GoogleAPICallError):
        return getattr(exc, "code", None) in _RETRIABLE_STATUS
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                        ConnectionError, auth_exc.TransportError)):
        return True
    if isinstance(exc, _urllib3_dropped()):  # a download's GET and body come from urllib3 itself
        return True
    response = getattr(exc, "response", None)  # google.cloud.storage.exceptions.InvalidResponse
    return getattr(response, "status_code", None) in _RETRIABLE_STATUS


@functools.cache
def _urllib3_dropped() -> tuple[type[BaseException], ...]:
    """urllib3's errors for a connection that failed, dropped or timed out (what requests
    would wrap as ``ConnectionError``/``Timeout``)."""
    from urllib3 import exceptions as u3

    return (u3.ProtocolError, u3.NewConnectionError, u3.ConnectTimeoutError, u3.ReadTimeoutError)


def make_retry(initial: float = 0.5, maximum: float = 16.0, timeout: float = 120.0) -> Any:
    """Exponential backoff with jitter (google.api_core) using :func:`is_retriable`."""
    from google.api_core.retry import Retry

    return Retry(predicate=is_retriable, initial=initial, maximum=maximum, multiplier=2.0, timeout=timeout)


def make_client(settings: "Settings | None" = None, pool_size: int = POOL_SIZE) -> Any:
    """A ``storage.Client`` with the right credentials, and a connection pool big enough for
    parallel sync (requests keeps 10 connections per host by default and drops the rest)."""
    client = _credentialed_client(settings)
    from requests.adapters import HTTPAdapter

    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


def _credentialed_client(settings: "Settings | None") -> Any:
    storage = _import_gcs()
    project = settings.gcs_project if settings else None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "lora-cloud-emulator", credentials=AnonymousCredentials())
    sa_json = settings.secret("gcs_service_account_json") if settings else None
    if sa_json:
        from google.oauth2 import service_account

        try:
            info = json.loads(sa_json)
            creds = service_account.Credentials.from_service_account_info(
                info, scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
            )
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                "gcs_service_account_json is not a valid service-account key (JSON with "
                "client_email and private_key)"
            ) from None
        return storage.Client(project=project or info.get("project_id"), credentials=creds)
    from google.auth import exceptions as auth_exc

    try:
        return storage.Client(project=project)
    except auth_exc.DefaultCredentialsError:
        raise ConfigError(
            "no Google Cloud credentials: run `gcloud auth application-default login` or "
            "`lora-cloud config set gcs_service_account_json \"$(cat key.json)\"`"
        ) from None


class _MemoryBudget:
    """At most ``total`` bytes reserved at once; a reservation waits for room (one larger than
    the whole budget waits for an empty one)."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        n = min(n, self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class _HashingReader:
    """A readable file that computes the crc32c of its bytes once, as they are first read:
    a chunk the client re-reads after a retry (it seeks back) is not hashed twice."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._crc = google_crc32c.Checksum()
        self.hashed = 0  # bytes hashed so far: everything before this offset

    def read(self, n: int = -1) -> bytes:
        start = self._f.tell()
        data = self._f.read(n)
        end = start + len(data)
        if end > self.hashed and start <= self.hashed:
            self._crc.update(data[self.hashed - start:])
            self.hashed = end
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def checksums(self) -> Checksums:
        """Size and crc32c (md5 left empty: GCS computes it, and reports it to compare)."""
        return Checksums(self.hashed, "", base64.b64encode(self._crc.digest()).decode())


def _checksum_refused(exc: BaseException) -> bool:
    """GCS (or the emulator) refused an upload because its bytes did not match the checksums
    sent with it (HTTP 400, or 409 from the emulator)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None) or getattr(exc, "code", None)
    if status not in (400, 409):
        return False
    text = f"{getattr(response, 'text', '')} {getattr(exc, 'message', '')}".lower()
    return any(word in text for word in ("checksum", "crc32c", "md5", "hash"))


@functools.cache
def _one_request_upload() -> bool:
    """The client's multipart upload can be called for any size (checked once: it is the
    client's internal method; without it, its public upload does, up to 8 MiB)."""
    from google.cloud.storage.blob import Blob

    fn = getattr(Blob, "_do_multipart_upload", None)
    if fn is None:
        return False
    params = inspect.signature(fn).parameters
    return {"client", "stream", "content_type", "size", "if_generation_match", "checksum", "retry"} <= set(params)


class _HashingWriter:
    """Wraps a writable file and computes the crc32c of what passes through."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._crc = google_crc32c.Checksum()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._crc.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    @property
    def crc32c(self) -> str:
        return base64.b64encode(self._crc.digest()).decode()


def _b64_to_hex(value: str | None) -> str | None:
    return base64.b64decode(value).hex() if value else None


class GcsStorage:
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
        self._memory = _MemoryBudget(max(memory_budget, self.single_request_max))
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
        return _host_name(self.client._connection)

    def _info(self, blob: Any, key: str | None = None) -> ObjectInfo:
        updated = _timestamp(blob)
        return ObjectInfo(
            key=key if key is not None else self._key(blob.name),
            size=int(blob.size or 0),
            md5=_b64_to_hex(blob.md5_hash),
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
        """Map a google/requests exception to our error tree (the one place that does)."""
        import requests
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth_exc
        from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

        what = f"{key!r} in {self.url}" if key else self.url
        if isinstance(exc, api.RetryError) and exc.cause is not None:  # retries ran out: the last error
            exc = exc.cause
        if isinstance(exc, InvalidResponse):  # raw media errors: rewrap by status
            status = getattr(getattr(exc, "response", None), "status_code", 0)
            exc = api.from_http_status(status, "media request failed")
        if isinstance(exc, api.NotFound):
            if key is None or not self._bucket_exists():
                raise self._missing_bucket() from None
            raise ObjectNotFound(f"no object {what}") from None
        if isinstance(exc, api.PreconditionFailed):
            raise PreconditionFailed(f"object {what} was changed by another writer (generation mismatch)") from None
        if isinstance(exc, (api.Unauthorized, api.Forbidden, auth_exc.RefreshError, auth_exc.DefaultCredentialsError)):
            code = getattr(exc, "code", None)
            raise StorageError(
                f"access to {self.url} was denied{f' (HTTP {code})' if code else ''}: the Google Cloud "
                "credentials are missing, expired or lack permission on this bucket; run `gcloud auth "
                "application-default login` or set gcs_service_account_json"
            ) from None
        if isinstance(exc, DataCorruption):
            raise ChecksumMismatch(f"transfer of {what} failed its checksum check; nothing was kept") from None
        if isinstance(exc, api.GoogleAPICallError):
            raise StorageError(f"GCS error (HTTP {exc.code}) on {what}") from None
        if isinstance(exc, (requests.RequestException, ConnectionError, auth_exc.TransportError, *_urllib3_dropped())):
            raise StorageError(f"cannot reach Google Cloud Storage for {what}: {type(exc).__name__}") from None
        raise exc

    def _call(self, fn: Callable[[], T], key: str | None) -> T:
        try:
            return fn()
        except (ChecksumMismatch, ConfigError):
            raise
        except Exception as exc:  # noqa: BLE001 - every foreign error goes through _translate
            self._translate(exc, key)

    def _media_get(self, url: str) -> Any:
        """GET ``url`` for its body: urllib3's streaming response (``status``, ``headers``,
        ``read(n, decode_content=False)``, ``release_conn()``, ``close()``).

        Straight on the authorised session's own connection pool, with its credentials and its
        TLS settings: requests' work around each call (preparing the request, merging the
        environment's settings, cookies, hooks, building a ``Response``) was 40% of a small
        download's CPU, and parallel downloads of small files are bound by that CPU, not by the
        network. Where the session would do more than that (a proxy, mutual TLS,
        an adapter of its own, a requests without the pool API), its own ``request`` does."""
        headers = {"Accept-Encoding": "gzip"}
        pool = self._media_pool(url)
        session = self.client._http
        if pool is None:
            return session.request("GET", url, stream=True, timeout=_MEDIA_TIMEOUT, headers=headers).raw
        from urllib3.util import Timeout

        path = url[url.index("/", url.index("//") + 2):]
        creds = session.credentials
        for refreshed in (False, True):  # as AuthorizedSession: a 401 refreshes the token once
            sent = dict(headers)
            creds.before_request(session._auth_request, "GET", url, sent)
            response = pool.urlopen("GET", path, headers=sent, redirect=False, assert_same_host=False,
                                    preload_content=False, decode_content=False, retries=False,
                                    timeout=Timeout(connect=_MEDIA_TIMEOUT[0], read=_MEDIA_TIMEOUT[1]))
            if response.status != 401 or refreshed:
                return response
            response.drain_conn()
            response.release_conn()
            creds.refresh(session._auth_request)
        raise AssertionError("unreachable")  # pragma: no cover

    def _media_pool(self, url: str) -> Any:
        """The urllib3 pool the session would send ``url`` through, or None where the session
        must send it itself (see :meth:`_media_get`). Its environment (proxies, CA bundle) is
        read once per storage, and the pool kept while the session keeps it open (every media
        URL has the same host)."""
        settings = self._direct
        if not settings:
            return None
        pool = settings.get("pool")
        if pool is None or getattr(pool, "pool", None) is None:  # first use, or closed by the session
            adapter = self.client._http.get_adapter(url)
            pool = adapter.get_connection_with_tls_context(settings["request"], settings["verify"], None,
                                                           settings["cert"])
            adapter.cert_verify(pool, url, settings["verify"], settings["cert"])
            settings["pool"] = pool
        return pool

    @functools.cached_property
    def _direct(self) -> dict[str, Any]:
        """:func:`_direct_settings` for the API's host, read once per storage (every media URL
        has that host); :meth:`_media_pool` keeps its pool in it."""
        return _direct_settings(self.client._http, self._api_base)

    @functools.cached_property
    def _bulk_origin(self) -> Any:
        """Where :meth:`fetch_many` sends its GETs itself (a :class:`bulk_get.Origin`), or None
        where only the session may send them (the same rule as :meth:`_media_pool`)."""
        from urllib.parse import urlsplit

        from . import bulk_get

        settings, parts = self._direct, urlsplit(self._api_base)
        if not settings or settings.get("cert") or parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        tls = _tls_context(settings["verify"]) if parts.scheme == "https" else None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return bulk_get.Origin(parts.scheme, parts.hostname, port, tls)

    def fetch_many(self, keys: list[str], land: Callable[[int, bytes, ObjectInfo], None], *,
                   in_flight: int, max_size: int) -> list[int]:
        """The fast way to read many small objects: up to ``in_flight`` GETs at once
        on one event loop (:mod:`.bulk_get`), each answer's bytes checked against its
        ``X-Goog-Hash`` crc32c, then handed to ``land(index, data, info)`` (on a landing thread;
        what it raises stops the run and is raised). Returns the indexes it did not land, in
        order: an answer that was not a clean, verified ``200`` of at most ``max_size`` bytes, or
        every index where the session must send the requests itself. Those are the caller's to
        fetch the careful way (:meth:`download_file`: retries, token refresh, our errors)."""
        origin = self._bulk_origin
        if origin is None or not keys:
            return list(range(len(keys)))
        from urllib.parse import quote

        from . import bulk_get

        base = f"/download/storage/v1/b/{quote(self.bucket_name, safe='')}/o/"
        path = _origin_path(self._api_base)
        targets = [f"{path}{base}{quote(self._name(k), safe='')}?alt=media" for k in keys]
        session = self.client._http
        creds = session.credentials

        def headers() -> dict[str, str]:
            sent: dict[str, str] = {}
            creds.before_request(session._auth_request, "GET", self._api_base, sent)
            return sent

        def keep(i: int, answer: bulk_get.Answer) -> bool:
            hashes = _goog_hashes(answer.headers.get("x-goog-hash", ""))
            crc = base64.b64encode(google_crc32c.Checksum(answer.body).digest()).decode()
            if hashes.get("crc32c") != crc:  # no header, or bytes that do not match: the careful way
                return False
            gen = answer.headers.get("x-goog-generation")
            land(i, answer.body, ObjectInfo(keys[i], len(answer.body), _b64_to_hex(hashes.get("md5")), crc,
                                            int(gen) if gen and gen.isdigit() else None))
            return True

        return bulk_get.get_many(origin, targets, headers=headers, land=keep, max_body=max_size,
                                 in_flight=min(in_flight, self.max_in_flight, _descriptor_room()),
                                 timeout=float(_MEDIA_TIMEOUT[1]))

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

    def read_bytes(self, key: str) -> bytes:
        buf = io.BytesIO()
        self._download(key, buf)
        return buf.getvalue()

    def read_generation(self, key: str, generation: int) -> bytes:
        """The bytes of exactly this generation of ``key`` (verified); :class:`ObjectNotFound`
        once it was replaced. What a listing described is what gets read (and billed)."""
        buf = io.BytesIO()
        self._download(key, buf, generation=generation)
        return buf.getvalue()

    def _download(self, key: str, f: BinaryIO, generation: int | None = None) -> ObjectInfo:
        """Stream ``key`` into ``f`` (empty, at its start) in 1 MiB reads, hashing on the way;
        raise if the bytes do not match the ``X-Goog-Hash`` of the answer (or the object's
        metadata: one more request).

        One GET (:meth:`_media_get`): the client's own download reads 8 KB at a time, which under
        16 parallel downloads makes the GIL, not the network, the limit. The stored
        bytes are read as stored (no transcoding), so their checksum applies; a retry starts
        the file over."""
        from urllib.parse import quote

        from google.api_core import exceptions as api

        name = self._name(key)
        url = (f"{self._api_base}/download/storage/v1/b/{quote(self.bucket_name, safe='')}"
               f"/o/{quote(name, safe='')}?alt=media")
        if generation is not None:
            url += f"&generation={int(generation)}"
        tries = [0]

        def attempt() -> tuple[_HashingWriter, Any]:
            if tries[0]:  # a retry: start the file over
                f.seek(0)
                f.truncate()
            tries[0] += 1
            w = _HashingWriter(f)
            response = self._media_get(url)
            read_all = False
            try:
                if response.status != 200:
                    raise api.from_http_status(response.status, "media request failed")
                while chunk := response.read(DOWNLOAD_READ, decode_content=False):
                    w.write(chunk)
                read_all = True
                return w, response.headers
            finally:
                if read_all:  # the body was read to its end: the connection goes back to the pool
                    response.release_conn()
                else:
                    response.close()

        w, headers = self._call(lambda: self.retry(attempt)(), key)
        hashes = _goog_hashes(headers.get("X-Goog-Hash", ""))
        expected = hashes.get("crc32c")
        md5 = _b64_to_hex(hashes.get("md5"))
        gen = headers.get("X-Goog-Generation")
        if expected is None:  # no header: the object's metadata says
            info = self.stat(key)
            expected, md5, gen = info.crc32c, md5 or info.md5, gen or info.generation
        if expected is None:
            raise ChecksumMismatch(f"GCS reported no checksum for {key!r}; refusing an unverified download")
        if w.crc32c != expected:
            raise ChecksumMismatch(f"object {key!r} in {self.url} is corrupt: its bytes do not match its crc32c")
        return ObjectInfo(key, w.size, md5, expected, int(gen) if gen is not None else None)

    def _verify_upload(self, blob: Any, key: str, local: Checksums) -> ObjectInfo:
        """What GCS reports it stored against the local checksums: the size, the crc32c and, when
        the caller hashed it (``local.md5`` may be empty: an upload hashes only crc32c as it
        reads), the md5. A mismatch, or nothing to compare, deletes that generation again."""
        info = self._info(blob, key)
        checks = [info.size == local.size]
        if info.crc32c is not None and local.crc32c:
            checks.append(info.crc32c == local.crc32c)
        if info.md5 is not None and local.md5:
            checks.append(info.md5 == local.md5)
        if not all(checks) or len(checks) < 2:
            with contextlib.suppress(Exception):
                blob.delete(if_generation_match=info.generation, retry=self.retry)
            raise ChecksumMismatch(
                f"upload of {key!r} to {self.url} does not match the local checksums (the file changed "
                "during the upload, or the bytes were damaged on the way); the bad object was deleted"
            )
        return info

    def write_bytes(self, key, data, *, if_generation_match=None, content_type=None, metadata=None) -> ObjectInfo:
        data = bytes(data)
        local = checksum_bytes(data)
        if len(data) <= self.single_request_max:
            return self._upload_one_request(key, data, local, if_generation_match=if_generation_match,
                                            content_type=content_type, metadata=metadata)
        blob = self._bucket.blob(self._name(key), chunk_size=self.chunk_size)
        if metadata:
            blob.metadata = dict(metadata)
        with self._memory.reserve(self.chunk_size):
            self._call(lambda: blob.upload_from_string(
                data, content_type=content_type or _guess_type(key), if_generation_match=if_generation_match,
                checksum="crc32c", retry=self.retry,
            ), key)
        return self._verify_upload(blob, key, local)

    def _upload_one_request(self, key: str, data: bytes, local: Checksums, *, if_generation_match: int | None,
                            content_type: str | None, metadata: dict[str, str] | None = None,
                            path: Path | None = None) -> ObjectInfo:
        """``data`` in one multipart request that carries its md5 and crc32c (hashed once, by the
        caller, from these very bytes): GCS refuses bytes that do not match them, and what it
        reports is checked again (:meth:`_verify_upload`)."""
        blob = self._bucket.blob(self._name(key))
        if metadata:
            blob.metadata = dict(metadata)
        blob.crc32c = local.crc32c
        if local.md5:
            blob.md5_hash = base64.b64encode(bytes.fromhex(local.md5)).decode()
        ctype = content_type or _guess_type(key)

        def run() -> None:
            from google.cloud.storage.exceptions import InvalidResponse

            try:
                if _one_request_upload():
                    response = blob._do_multipart_upload(
                        self.client, io.BytesIO(data), ctype, len(data), None, if_generation_match, None, None, None,
                        checksum=None, retry=self.retry)
                    blob._set_properties(response.json())
                else:  # pragma: no cover - an older or newer client: its public upload
                    blob.upload_from_string(data, content_type=ctype, if_generation_match=if_generation_match,
                                            checksum="crc32c", retry=self.retry)
            except Exception as exc:  # noqa: BLE001 - a checksum refusal is ours to name
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                if _checksum_refused(cause):
                    what = f"{path} changed while it was being uploaded, or" if path else "the bytes"
                    raise ChecksumMismatch(f"GCS refused {key!r}: {what} arrived corrupted; nothing was kept") from None
                if isinstance(cause, InvalidResponse):
                    raise cause from None
                raise

        self._call(run, key)
        return self._verify_upload(blob, key, local)

    def _upload_media(self, key: str, data: bytes, local: Checksums, *, if_generation_match: int | None,
                      content_type: str | None, path: Path) -> ObjectInfo:
        """``data`` in one simple (``uploadType=media``) request: the body is the bytes alone,
        with their md5 and crc32c in ``X-Goog-Hash`` (hashed once, by the caller). Multipart
        would carry the same in its metadata, but wraps the bytes in a MIME body that servers
        (the emulator more than most) must take apart again. What GCS reports is checked
        (:meth:`_verify_upload`): a mismatch deletes the object again."""
        from urllib.parse import quote

        from google.api_core import exceptions as api

        blob = self._bucket.blob(self._name(key))
        base = self._api_base
        url = (f"{base}/upload/storage/v1/b/{quote(self.bucket_name, safe='')}/o?uploadType=media"
               f"&name={quote(blob.name, safe='')}")
        if if_generation_match is not None:
            url += f"&ifGenerationMatch={int(if_generation_match)}"
        hashes = f"crc32c={local.crc32c}"
        if local.md5:
            hashes += f",md5={base64.b64encode(bytes.fromhex(local.md5)).decode()}"
        headers = {"Content-Type": content_type or _guess_type(key), "X-Goog-Hash": hashes}

        def send() -> dict[str, Any]:
            response = self.client._http.request("POST", url, data=data, headers=headers, timeout=(60, 600))
            if response.status_code != 200:
                if _checksum_refused(response_error(response)):
                    raise ChecksumMismatch(f"GCS refused {key!r}: {path} changed while it was being uploaded, "
                                           "or arrived corrupted; nothing was kept")
                raise api.from_http_response(response)
            return response.json()

        created = self._call(lambda: self.retry(send)(), key)
        blob._set_properties(created)
        return self._verify_upload(blob, key, local)

    def upload_file(self, path, key, *, if_generation_match=None, content_type=None, checksums=None) -> ObjectInfo:
        """One request up to :attr:`single_request_max`, else a resumable upload in chunks. The
        file is read once: its checksums (unless the plan already has them) are computed from
        the bytes as they are sent, and checked against what GCS stored."""
        path = Path(path)
        self._name(key)  # validate before touching the disk
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise StorageError(f"local file {path} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
        with f:
            before = os.fstat(f.fileno())
            size = before.st_size
            if checksums is not None and checksums.size != size:
                raise ChecksumMismatch(f"{path} changed while it was being uploaded")
            if size <= self.single_request_max:
                with self._memory.reserve(size):
                    try:
                        data = f.read(size + 1)
                    except OSError as exc:
                        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
                    if len(data) != size or _changed(f, before):
                        raise ChecksumMismatch(f"{path} changed while it was being uploaded")
                    local = checksums or _crc_only(data)  # md5: GCS computes it (compared below)
                    ctype = content_type or _guess_type(key)
                    if ctype.startswith(("application/json", "multipart/")):
                        # a server may read such a body as request metadata (the emulator does)
                        return self._upload_one_request(key, data, local, if_generation_match=if_generation_match,
                                                        content_type=ctype, path=path)
                    return self._upload_media(key, data, local, if_generation_match=if_generation_match,
                                              content_type=ctype, path=path)
            with self._memory.reserve(self.chunk_size):
                return self._upload_resumable(f, path, key, before, checksums,
                                              if_generation_match=if_generation_match, content_type=content_type)

    def _upload_resumable(self, f: BinaryIO, path: Path, key: str, before: os.stat_result,
                          checksums: Checksums | None, *, if_generation_match: int | None,
                          content_type: str | None) -> ObjectInfo:
        size = before.st_size
        blob = self._bucket.blob(self._name(key), chunk_size=self.chunk_size)
        reader = _HashingReader(f)
        # with the whole file's crc32c known up front, GCS refuses a differing upload at the end
        extra = ({"crc32c_checksum_value": checksums.crc32c}
                 if checksums is not None and _accepts_full_crc32c(type(blob)) else {})

        def run() -> None:
            blob.upload_from_file(
                reader, size=size, content_type=content_type or _guess_type(key),
                if_generation_match=if_generation_match, checksum="crc32c", retry=self.retry, **extra,
            )

        try:
            self._call(run, key)
        except ChecksumMismatch:  # the client saw GCS's checksum differ from the bytes it sent
            self._delete_if_not(key, checksums or reader.checksums())
            raise ChecksumMismatch(
                f"{path} changed while it was being uploaded, or arrived corrupted; nothing was kept"
            ) from None
        local = checksums or reader.checksums()
        if local.size != size or _changed(f, before):  # what was sent is not one version of the file
            with contextlib.suppress(Exception):
                blob.delete(if_generation_match=blob.generation, retry=self.retry)
            raise ChecksumMismatch(f"{path} changed while it was being uploaded; nothing was kept")
        return self._verify_upload(blob, key, local)

    def _delete_if_not(self, key: str, local: Checksums) -> None:
        """Remove ``key`` if it holds other bytes than ``local`` (only that generation)."""
        with contextlib.suppress(Exception):
            info = self.stat(key)
            if info.size != local.size or info.crc32c != local.crc32c or (local.md5 and info.md5 != local.md5):
                self.delete(key, if_generation_match=info.generation)

    def download_file(self, key, path, *, fsync: bool = True) -> ObjectInfo:
        dest = Path(path)
        self._name(key)  # validate before touching the disk
        try:
            with landing_file(dest, fsync=fsync) as f:
                info = self._download(key, f)
            return info
        except OSError as exc:
            raise StorageError(f"cannot download {key!r} to {dest}: {exc.strerror or exc}") from None

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


def _direct_settings(session: Any, url: str) -> dict[str, Any]:
    """What :meth:`GcsStorage._media_pool` needs to send ``url``'s GETs on the session's pool
    itself (``{}``: it cannot, the session's ``request`` must): an ``AuthorizedSession`` without
    mutual TLS, an adapter that is requests' own ``HTTPAdapter`` (not one that overrides
    ``send``), no proxy for the URL, and requests >= 2.32.2 (``get_connection_with_tls_context``)."""
    import requests
    from requests.adapters import HTTPAdapter

    try:
        from google.auth.transport.requests import AuthorizedSession
    except ImportError:  # pragma: no cover - google-auth comes with google-cloud-storage
        return {}
    if not isinstance(session, AuthorizedSession) or getattr(session, "is_mtls", False) or session.auth:
        return {}
    adapter = session.get_adapter(url)
    if (type(adapter).send is not HTTPAdapter.send or not hasattr(adapter, "get_connection_with_tls_context")
            or not hasattr(session, "_auth_request")):
        return {}
    env = session.merge_environment_settings(url, {}, None, None, None)
    if any(env.get("proxies", {}).values()):
        return {}
    return {"request": requests.Request("GET", url).prepare(), "verify": env.get("verify", True),
            "cert": env.get("cert")}


def _tls_context(verify: Any) -> ssl.SSLContext:
    """The TLS context requests would verify with: its CA bundle (certifi's) when ``verify`` is
    True, the file or folder it names, or no verification when the user turned it off."""
    import ssl

    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    where = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
    if os.path.isdir(where):
        return ssl.create_default_context(capath=where)
    return ssl.create_default_context(cafile=where)


def _origin_path(base: str) -> str:
    """The path part of an API base URL (empty for GCS itself and the emulator)."""
    from urllib.parse import urlsplit

    return urlsplit(base).path.rstrip("/")


def _descriptor_room() -> int:
    """How many connections fit in a quarter of this process's file-descriptor limit (macOS
    starts shells at 256)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - Windows
        return 64
    return BULK_IN_FLIGHT if soft == resource.RLIM_INFINITY else max(8, soft // 4)


def _crc_only(data: bytes) -> Checksums:
    """The crc32c of bytes about to be sent (what verifies the transfer); their md5 is what GCS
    reports once it has them, so it is not computed here."""
    return Checksums(len(data), "", base64.b64encode(google_crc32c.Checksum(data).digest()).decode())


def _goog_hashes(header: str) -> dict[str, str]:
    """``crc32c=...,md5=...`` (as GCS sends ``X-Goog-Hash``) as a dict."""
    out = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and value:
            out[name.strip().lower()] = value.strip()
    return out


def _timestamp(blob: Any) -> float | None:
    """When ``blob`` was last written, as a POSIX time: its RFC 3339 ``updated`` read with
    ``fromisoformat`` (the client's ``strptime`` was a tenth of a 1,000-object listing's time)."""
    from datetime import datetime

    raw = blob._properties.get("updated") if isinstance(getattr(blob, "_properties", None), dict) else None
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    return blob.updated.timestamp() if blob.updated is not None else None  # another shape: the client's parser


def _host_name(connection: Any) -> str:
    """The API's base URL as the client itself computes it (the emulator's, when set)."""
    get = getattr(connection, "get_api_base_url_for_mtls", None)
    return get() if get is not None else connection.API_BASE_URL


def response_error(response: Any) -> Exception:
    """An error carrying ``response`` (for :func:`_checksum_refused`)."""
    exc = Exception(f"HTTP {response.status_code}")
    exc.response = response  # type: ignore[attr-defined]
    return exc


def _changed(f: BinaryIO, before: os.stat_result) -> bool:
    """The open file is no longer the one ``before`` described (written to meanwhile)."""
    now = os.fstat(f.fileno())
    return (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


@functools.cache
def _accepts_full_crc32c(blob_cls: type) -> bool:
    """Newer 3.x clients can send the whole file's crc32c with a resumable upload."""
    return "crc32c_checksum_value" in inspect.signature(blob_cls.upload_from_file).parameters


def _guess_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"
