"""One error tree for the whole pack. Every edge maps it in one place.

    LoraCloudError                 user-facing message; never contains secrets
    ├── ConfigError                missing key, bad settings, bad name      -> HTTP 400, CLI exit 2
    ├── ProviderError                                                       -> HTTP 502, CLI exit 4
    │   ├── OfferUnavailable       no offer matches                         -> 409
    │   ├── ProvisioningFailed     .instance_ids still to clean up          -> 502
    │   ├── ProviderAPIError       .status, .body (redacted)                -> 502
    │   └── BudgetExceeded         a launch or run would break a budget     -> 402
    ├── StorageError                                                        -> HTTP 502, CLI exit 3
    │   ├── ObjectNotFound         missing object / dataset / LoRA          -> 404
    │   ├── ChecksumMismatch       bytes differ from their recorded hash    -> 502
    │   ├── PreconditionFailed     someone else wrote first (generation)    -> 409
    │   │   └── LockHeld           another writer holds the lease (.holder) -> 409
    │   ├── BucketNotFound         the configured bucket does not exist     -> 404
    │   └── CorruptRecord          a record (bucket object, db row) we cannot read as what it should be -> 502
    ├── TunnelError                SSH connection / forwarding problems     -> 503
    ├── DatasetError               bad images, bad captions, failed checks  -> 422
    │   ├── ImageLoadError         one file could not be read (.path)
    │   ├── DatasetExists          the name is taken: say replace or merge  -> 409
    │   └── DatasetInUse           a live run trains on it: not changed     -> 409
    ├── TrainingError              the run failed (kohya, weights, deadline)-> 500
    └── ComfyUIError               a ComfyUI did not answer / failed a prompt -> 502, CLI exit 8
        └── WorkflowRejected       /prompt refused the workflow (.node_errors) -> 422

    ConfigError also has RequestTooLarge (a request body over the routes' limit -> HTTP 413).

``http_status`` and ``exit_code`` live on the classes so routes, the CLI and nodes all agree.
Messages are passed through :func:`redact` before they reach a user.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

# a separator between a key's name and its value: quotes, '=', ':', spaces, or their URL encodings
_SEP = r"(?:[\"'=:\s]|%22|%27|%3[Dd]|%3[Aa]|%20|\+)+"
_SPACE = r"(?: |%20|\+)"
_SECRET_PATTERNS: list[re.Pattern[str]] = [
    re.compile(r"(?i)(bearer(?:\s|%20|\+)+)[A-Za-z0-9._\-~+/%]{8,}=*"),
    re.compile(rf"(?i)(api(?:[_-]|%5[Ff])?key{_SEP})[A-Za-z0-9._\-~%]{{8,}}"),
    re.compile(rf"(?i)(token{_SEP})[A-Za-z0-9._\-~%]{{8,}}"),
    re.compile(rf"(?i)(private(?:_|%5[Ff])key(?:_|%5[Ff])id{_SEP})[0-9a-f]{{16,}}"),
    re.compile(rf"(?i)(client(?:_|%5[Ff])id{_SEP})[0-9]{{10,}}"),
    re.compile(rf"(?i)(client(?:_|%5[Ff])email{_SEP})[A-Za-z0-9._+-]+(?:@|%40)[A-Za-z0-9.-]+"),
    re.compile(r"(-----BEGIN [A-Z ]*PRIVATE KEY-----)[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----)"),
    re.compile(rf"(-----BEGIN(?:{_SPACE}[A-Z]+)*{_SPACE}PRIVATE{_SPACE}KEY-----)[\s\S]*?"
               rf"(-----END(?:{_SPACE}[A-Z]+)*{_SPACE}PRIVATE{_SPACE}KEY-----)"),
    re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+\.iam\.gserviceaccount\.com"),
    re.compile(r"\bhf_[A-Za-z0-9]{10,}"),
]
# Fields of a service-account key that are the same for every key, so masking them hides nothing
# and would mask harmless text such as "service_account" everywhere.
_PUBLIC_SA_FIELDS = {"type", "auth_uri", "token_uri", "auth_provider_x509_cert_url", "universe_domain"}
_known_secrets: set[str] = set()
_by_length: list[str] = []


def _forms(value: str) -> set[str]:
    """The ways a secret shows up in text: as is, JSON-escaped, URL-encoded (both styles)."""
    return {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value, safe=""), quote(value)}


def _json_secret_values(value: str) -> list[str]:
    """Every non-public string in a JSON object secret (a service-account key), however nested."""
    try:
        data: Any = json.loads(value)
    except (ValueError, RecursionError):
        return []
    out: list[str] = []

    def walk(node: Any, key: str | None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key not in _PUBLIC_SA_FIELDS:
            out.append(node)

    if isinstance(data, dict):
        walk(data, None)
    return out


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` masks it wherever it appears: as is, JSON-escaped
    or URL-encoded; for a JSON secret (a service-account key) also each of its fields on its own,
    so a key re-serialized with other spacing or quoted one field at a time is masked too."""
    if not value or len(value) < 6:
        return
    new = {f for part in [value, *_json_secret_values(value)] if len(part) >= 6 for f in _forms(part) if len(f) >= 6}
    if not new <= _known_secrets:
        _known_secrets.update(new)
        # longest first, so a whole key is masked before one of its fields cuts it apart
        _by_length[:] = sorted(_known_secrets, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask every known secret and anything that looks like a key or token in ``text``."""
    if not text:
        return text
    extra = sorted({f for s in secrets if s for f in _forms(s)}, key=len, reverse=True)
    for s in [*extra, *_by_length]:
        if s in text:
            text = text.replace(s, "****")
    for pat in _SECRET_PATTERNS:
        if pat.groups == 2:
            text = pat.sub(lambda m: m.group(1) + "****" + m.group(2), text)
        elif pat.groups == 1:
            text = pat.sub(lambda m: m.group(1) + "****", text)
        else:
            text = pat.sub("****", text)
    return text


class LoraCloudError(Exception):
    """Base of every error this pack raises on purpose; its message is shown to the user."""

    http_status = 500
    exit_code = 1
    #: the ``details`` an HTTP answer carries besides the message (only plain, non-secret data)
    public_details: tuple[str, ...] = ()

    def __init__(self, message: str = "", **details: object) -> None:
        self.message = redact(message or self.__class__.__doc__ or self.__class__.__name__)
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, object]:
        return {"error": self.__class__.__name__, "message": self.message, "status": self.http_status}


class ConfigError(LoraCloudError):
    """Missing or invalid settings, or an invalid name."""

    http_status = 400
    exit_code = 2


class RequestTooLarge(ConfigError):
    """A request body over the size the routes accept."""

    http_status = 413


class ProviderError(LoraCloudError):
    """The GPU provider failed."""

    http_status = 502
    exit_code = 4


class OfferUnavailable(ProviderError):
    """No GPU offer matches the request."""

    http_status = 409


class ProvisioningFailed(ProviderError):
    """An instance could not be brought up; ``instance_ids`` may still need cleaning up."""

    def __init__(self, message: str = "", instance_ids: Iterable[int | str] = (), **details: object):
        super().__init__(message, **details)
        self.instance_ids = list(instance_ids)


class ProviderAPIError(ProviderError):
    """The provider's API answered with an error."""

    def __init__(self, message: str = "", status: int | None = None, body: str = "", **details: object):
        super().__init__(message, **details)
        self.status = status
        self.body = redact(body or "")[:2000]


class BudgetExceeded(ProviderError):
    """The action would exceed a configured budget."""

    http_status = 402


class StorageError(LoraCloudError):
    """Reading or writing the bucket (or local folder) failed."""

    http_status = 502
    exit_code = 3


class ObjectNotFound(StorageError):
    """The object does not exist."""

    http_status = 404


class BucketNotFound(StorageError):
    """The configured bucket does not exist or is not reachable."""

    http_status = 404


class ChecksumMismatch(StorageError):
    """Transferred bytes do not match their recorded checksum."""


class PreconditionFailed(StorageError):
    """Another writer changed the object first (generation precondition failed)."""

    http_status = 409


class LockHeld(PreconditionFailed):
    """Another writer holds the lease on what we want to change (``holder``: who, since when)."""

    def __init__(self, message: str = "", holder: dict[str, object] | None = None, **details: object):
        super().__init__(message, **details)
        self.holder = holder


class CorruptRecord(StorageError):
    """A record that exists but cannot be read as what it should be: a ``status.json`` that is not
    a status, a manifest that is not a manifest, a state-store row with an unknown state.

    Bucket content is untrusted input (a rented host can write it): readers skip such a record
    and report it, they never let it stop a listing or a guard round. Where one is asked for by
    itself (a run's config), the answer is a 422: the record is damaged, the storage answered.
    """

    http_status = 422


class TunnelError(LoraCloudError):
    """The SSH connection or port forward failed."""

    http_status = 503
    exit_code = 5


class DatasetError(LoraCloudError):
    """The dataset is invalid or an image could not be processed."""

    http_status = 422
    exit_code = 6


class ImageLoadError(DatasetError):
    """One image could not be loaded."""

    def __init__(self, message: str = "", path: str = "", **details: object):
        super().__init__(message, **details)
        self.path = path


class DatasetExists(DatasetError):
    """A dataset of that name exists; writing into it needs an explicit replace or merge."""

    http_status = 409


class DatasetInUse(DatasetError):
    """A live run trains on the dataset: changing it now could mix two datasets in one run."""

    http_status = 409
    public_details = ("runs",)  # the sidebar names them before it offers "replace anyway"


class TrainingError(LoraCloudError):
    """The training run failed."""

    exit_code = 7


class ComfyUIError(LoraCloudError):
    """A ComfyUI (this one, or a remote session's) did not answer, or failed a queued workflow."""

    http_status = 502
    exit_code = 8


class WorkflowRejected(ComfyUIError):
    """ComfyUI refused a workflow at ``/prompt`` (unknown node, bad input, missing model file);
    ``.node_errors`` is ComfyUI's per-node answer."""

    http_status = 422

    def __init__(self, message: str = "", node_errors: dict | None = None, **details: object):
        super().__init__(message, **details)
        self.node_errors = node_errors or {}
