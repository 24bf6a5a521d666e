"""How :class:`~.gcs.GcsStorage` writes objects, each verified: a small file in one request that
carries its checksums (GCS refuses bytes that differ), a larger one through a resumable session
in chunks; what GCS reports it stored is compared with the local checksums, and a mismatch
deletes that generation again. A file is read once: its crc32c is computed from the bytes as
they are sent. The bytes held in memory at once are bounded (:class:`MemoryBudget`).

Uploads carry the same bytes on every attempt, so the one retry policy applies to them too, and
a generation precondition still protects an overwrite.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import inspect
import io
import mimetypes
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from ..errors import ChecksumMismatch, StorageError
from .base import Checksums, ObjectInfo, checksum_bytes
from .gcs_errors import checksum_refused, response_error
from .gcs_hashes import HashingReader, crc_only

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


class MemoryBudget:
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


class GcsUploads:
    """The writing half of :class:`~.gcs.GcsStorage`, which it is mixed into: it works on the
    storage's ``client``, ``retry``, ``url``, ``bucket_name``, ``_api_base``, ``_bucket``,
    ``_memory`` (a :class:`MemoryBudget`), ``chunk_size``, ``single_request_max``, ``_name``,
    ``_info``, ``stat`` and ``delete``, and reports errors through the storage's ``_call``."""

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
                if checksum_refused(cause):
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
                if checksum_refused(response_error(response)):
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
                    local = checksums or crc_only(data)  # md5: GCS computes it (compared below)
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
        reader = HashingReader(f)
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
