"""What Google's errors mean to us: which are worth a retry (the one retry policy, passed to
every call), which upload answer is GCS refusing bytes that do not match their checksums, and
how each maps to our error tree (:func:`raise_translated`, the one place that does it).

Messages never carry the library's text (it can include URLs and headers), only what we compose.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NoReturn

from ..errors import ChecksumMismatch, PreconditionFailed, StorageError

_RETRIABLE_STATUS = {408, 429, 500, 502, 503, 504}


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


def checksum_refused(exc: BaseException) -> bool:
    """GCS (or the emulator) refused an upload because its bytes did not match the checksums
    sent with it (HTTP 400, or 409 from the emulator)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None) or getattr(exc, "code", None)
    if status not in (400, 409):
        return False
    text = f"{getattr(response, 'text', '')} {getattr(exc, 'message', '')}".lower()
    return any(word in text for word in ("checksum", "crc32c", "md5", "hash"))


def response_error(response: Any) -> Exception:
    """An error carrying ``response`` (for :func:`checksum_refused`)."""
    exc = Exception(f"HTTP {response.status_code}")
    exc.response = response  # type: ignore[attr-defined]
    return exc


def raise_translated(exc: BaseException, what: str, url: str, not_found: Callable[[], Exception]) -> NoReturn:
    """Raise ``exc`` (a google/requests exception about ``what`` in the storage at ``url``) as our
    error tree says; ``not_found()`` is what a 404 means (a missing object, or a missing bucket)."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth_exc
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

    if isinstance(exc, api.RetryError) and exc.cause is not None:  # retries ran out: the last error
        exc = exc.cause
    if isinstance(exc, InvalidResponse):  # raw media errors: rewrap by status
        status = getattr(getattr(exc, "response", None), "status_code", 0)
        exc = api.from_http_status(status, "media request failed")
    if isinstance(exc, api.NotFound):
        raise not_found() from None
    if isinstance(exc, api.PreconditionFailed):
        raise PreconditionFailed(f"object {what} was changed by another writer (generation mismatch)") from None
    if isinstance(exc, (api.Unauthorized, api.Forbidden, auth_exc.RefreshError, auth_exc.DefaultCredentialsError)):
        code = getattr(exc, "code", None)
        raise StorageError(
            f"access to {url} was denied{f' (HTTP {code})' if code else ''}: the Google Cloud "
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
