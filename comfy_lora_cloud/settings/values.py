"""Strict parsing of the settings' typed values: the storage URL, http(s) URLs and the
``allowed_hosts`` list. Each check returns the normalized value or raises ``ValueError`` with a
message a person can act on (pydantic turns it into the field's error)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit

# GCS bucket names: 3-63 characters (or up to 222 in dot-separated parts of at most 63), lowercase
# letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_HOST_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_storage_url(value: str) -> str:
    """``gs://bucket[/prefix]`` or an absolute (or ``~``) local folder; anything else is refused.

    The prefix may not hold ``..``, ``.`` or empty parts: a prefix is where the pack writes, and
    ``gs://b/../../x`` must not quietly mean some other place.
    """
    v = (value or "").strip()
    if not v:
        return ""
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError("storage must not contain control characters")
    scheme = v.split("://", 1)[0].lower() if "://" in v else ""
    if scheme and scheme != "gs":
        raise ValueError(f"storage {scheme}:// is not supported: use gs://bucket[/prefix] (Google Cloud Storage) "
                         "or an absolute folder path")
    if scheme == "gs":
        bucket, _, prefix = v[5:].partition("/")
        if not bucket:
            raise ValueError("gs:// URL needs a bucket name, e.g. gs://my-bucket/lora")
        parts = bucket.split(".")
        if (not _BUCKET_RE.match(bucket) or (len(bucket) > 63 and "." not in bucket)
                or any(not p or len(p) > 63 for p in parts) or bucket.startswith("goog") or "google" in bucket
                or _is_ip(bucket)):
            raise ValueError(f"{bucket!r} is not a valid GCS bucket name (3-63 lowercase letters, digits, "
                             "'-', '_' or '.', starting and ending with a letter or digit)")
        prefix = prefix.rstrip("/")
        if prefix:
            segments = prefix.split("/")
            if any(s in ("", ".", "..") for s in segments) or "\\" in prefix:
                raise ValueError(f"the prefix of {v!r} must not contain '..', '.', '\\' or empty parts")
        return f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
    if not (v.startswith("~") or PurePosixPath(v).is_absolute() or PureWindowsPath(v).is_absolute()):
        raise ValueError(f"storage {v!r} must be gs://bucket[/prefix] or an absolute folder path (or ~/...)")
    return v


def check_http_url(value: str, name: str) -> str:
    """An ``http://`` or ``https://`` URL with a host: nothing a browser or a client could run."""
    v = (value or "").strip()
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"{name} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL with a host")
    if any(c.isspace() or ord(c) < 32 for c in v) or parts.username or parts.password:
        raise ValueError(f"{name} must not contain spaces, control characters or a user:password part")
    return v.rstrip("/")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def split_host_list(value: str) -> list[str]:
    """``allowed_hosts`` entries, checked and normalized (lowercase, no trailing dot).

    An entry is a host name (``comfy.lan``), an IP address (``192.168.1.5``, ``[fe80::1]``) or an
    origin (``https://comfy.example.com[:port]``). No wildcards: a Host rule with a ``*`` is no rule.
    """
    out: list[str] = []
    for raw in re.split(r"[,\s]+", (value or "").strip()):
        entry = raw.strip().lower()
        if not entry:
            continue
        if "://" in entry:
            try:
                parts = urlsplit(entry)
                port = parts.port
            except ValueError:
                raise ValueError(f"allowed_hosts entry {raw!r} is not a valid origin") from None
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
                    or parts.query or parts.fragment or parts.username or parts.password:
                raise ValueError(f"allowed_hosts entry {raw!r} must be an origin such as https://comfy.example.com")
            host = parts.hostname.rstrip(".")
            if not (_is_ip(host) or _is_host_name(host)):
                raise ValueError(f"allowed_hosts entry {raw!r} does not name a valid host")
            shown = f"[{host}]" if ":" in host else host
            out.append(f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else ""))
            continue
        host = entry.rstrip(".")
        if _is_ip(host):
            out.append(host.strip("[]"))
        elif _is_host_name(host):
            out.append(host)
        else:
            raise ValueError(f"allowed_hosts entry {raw!r} is not a host name, an IP address or an origin "
                             "(wildcards are not allowed)")
    return out


def _is_host_name(host: str) -> bool:
    labels = host.split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL_RE.match(label) for label in labels)
