"""How :class:`~.gcs.GcsStorage` reads objects: one streamed GET per object, hashed as its
bytes arrive and checked against the ``X-Goog-Hash`` of the answer (or the object's metadata),
into a temporary file renamed into place; and many small objects at once on one event loop
(:meth:`GcsDownloads.fetch_many`, through :mod:`.bulk_get`).

The GETs go straight to the authorised session's connection pool where the session would add
nothing but per-call work (no proxy, no mutual TLS, requests' own adapter): parallel downloads of
small files are bound by that CPU, not by the network.
"""

from __future__ import annotations

import base64
import functools
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

import google_crc32c

from ..errors import ChecksumMismatch, StorageError
from .base import ObjectInfo
from .gcs_hashes import HashingWriter, b64_to_hex, goog_hashes
from .landing import landing_file

if TYPE_CHECKING:
    import ssl

#: bytes a download reads from the socket at a time
DOWNLOAD_READ = 1024 * 1024
#: (connect, read) seconds for a download's GET
_MEDIA_TIMEOUT = (60, 120)
#: GETs :meth:`GcsDownloads.fetch_many` keeps in flight: one event loop carries many more than
#: threads could, and a connection each is within any machine's file limit
#: (:func:`_descriptor_room`)
BULK_IN_FLIGHT = 128


class GcsDownloads:
    """The reading half of :class:`~.gcs.GcsStorage`, which it is mixed into: it works on the
    storage's ``client``, ``retry``, ``url``, ``bucket_name``, ``max_in_flight``, ``_api_base``,
    ``_name`` and ``stat``, and reports errors through the storage's ``_call``."""

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
        """Where :meth:`fetch_many` sends its GETs itself (a :class:`~.bulk_get.Origin`), or None
        where only the session may send them (the same rule as :meth:`_media_pool`)."""
        from urllib.parse import urlsplit

        from .bulk_get import Origin

        settings, parts = self._direct, urlsplit(self._api_base)
        if not settings or settings.get("cert") or parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        tls = _tls_context(settings["verify"]) if parts.scheme == "https" else None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return Origin(parts.scheme, parts.hostname, port, tls)

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

        from .bulk_get import Answer, get_many

        base = f"/download/storage/v1/b/{quote(self.bucket_name, safe='')}/o/"
        path = _origin_path(self._api_base)
        targets = [f"{path}{base}{quote(self._name(k), safe='')}?alt=media" for k in keys]
        session = self.client._http
        creds = session.credentials

        def headers() -> dict[str, str]:
            sent: dict[str, str] = {}
            creds.before_request(session._auth_request, "GET", self._api_base, sent)
            return sent

        def keep(i: int, answer: Answer) -> bool:
            hashes = goog_hashes(answer.headers.get("x-goog-hash", ""))
            crc = base64.b64encode(google_crc32c.Checksum(answer.body).digest()).decode()
            if hashes.get("crc32c") != crc:  # no header, or bytes that do not match: the careful way
                return False
            gen = answer.headers.get("x-goog-generation")
            land(i, answer.body, ObjectInfo(keys[i], len(answer.body), b64_to_hex(hashes.get("md5")), crc,
                                            int(gen) if gen and gen.isdigit() else None))
            return True

        return get_many(origin, targets, headers=headers, land=keep, max_body=max_size,
                        in_flight=min(in_flight, self.max_in_flight, _descriptor_room()),
                        timeout=float(_MEDIA_TIMEOUT[1]))

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

        def attempt() -> tuple[HashingWriter, Any]:
            if tries[0]:  # a retry: start the file over
                f.seek(0)
                f.truncate()
            tries[0] += 1
            w = HashingWriter(f)
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
        hashes = goog_hashes(headers.get("X-Goog-Hash", ""))
        expected = hashes.get("crc32c")
        md5 = b64_to_hex(hashes.get("md5"))
        gen = headers.get("X-Goog-Generation")
        if expected is None:  # no header: the object's metadata says
            info = self.stat(key)
            expected, md5, gen = info.crc32c, md5 or info.md5, gen or info.generation
        if expected is None:
            raise ChecksumMismatch(f"GCS reported no checksum for {key!r}; refusing an unverified download")
        if w.crc32c != expected:
            raise ChecksumMismatch(f"object {key!r} in {self.url} is corrupt: its bytes do not match its crc32c")
        return ObjectInfo(key, w.size, md5, expected, int(gen) if gen is not None else None)

    def download_file(self, key, path, *, fsync: bool = True) -> ObjectInfo:
        dest = Path(path)
        self._name(key)  # validate before touching the disk
        try:
            with landing_file(dest, fsync=fsync) as f:
                info = self._download(key, f)
            return info
        except OSError as exc:
            raise StorageError(f"cannot download {key!r} to {dest}: {exc.strerror or exc}") from None


def _direct_settings(session: Any, url: str) -> dict[str, Any]:
    """What :meth:`GcsDownloads._media_pool` needs to send ``url``'s GETs on the session's pool
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
