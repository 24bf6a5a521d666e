"""Files that come from the bucket, read safely: single file names inside a dataset or run folder
and safetensors headers. Shared by the library and the runs services. How files are served to a
browser, and thumbnails, are :mod:`.media`'s."""

from __future__ import annotations

import json
import struct
from typing import Any

from ... import jsonsafe
from ...errors import ConfigError, DatasetError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit for the JSON header
THUMB_SIZES = (64, 128, 256, 512)


def check_file_name(name: str, kind: str = "file name") -> str:
    """A single file name inside a dataset or a run folder: no separators, no ``..``, not hidden.

    Looser than :func:`validate_name` (camera files such as ``IMG (1).jpg`` are fine), strict
    about everything that could leave the folder.
    """
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ConfigError(f"{kind} must be 1 to 255 characters")
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        raise ConfigError(f"{kind} {name!r} must not contain '/', '\\' or '..', nor start with '.'")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"{kind} {name!r} must not contain control characters")
    return name


def parse_safetensors_header(data: bytes) -> dict[str, Any]:
    """The JSON header of a safetensors file: 8-byte little-endian length, then that much JSON.

    Returns ``{"metadata": {...__metadata__ (ss_* keys)...}, "tensors": n}``. Raises
    :class:`DatasetError` when the bytes are not a safetensors file.
    """
    if len(data) < 8:
        raise DatasetError("not a safetensors file: shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length == 0 or length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise DatasetError("not a safetensors file: bad header length")
    try:  # a bucket object anyone with the key wrote: within bounds (depth, numbers)
        header = jsonsafe.loads(data[8 : 8 + length], max_bytes=MAX_HEADER_BYTES)
    except ValueError as exc:
        raise DatasetError(f"not a safetensors file we can read: the header is {exc}") from None
    if not isinstance(header, dict):
        raise DatasetError("not a safetensors file: the header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        meta = {}
    # metadata values are text for kohya; anything else is shown as JSON text, and nothing is huge
    return {"metadata": {str(k)[:200]: (v if isinstance(v, str) else json.dumps(v))[:10_000] for k, v in meta.items()},
            "tensors": sum(1 for k in header if k != "__metadata__")}


