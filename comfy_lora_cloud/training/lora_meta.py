"""What made a LoRA, written where it travels: the bucket's ``loras/<name>.json`` and the
``.safetensors`` header itself, so a downloaded file still says which run, dataset, trigger word
and settings made it.

The one home of the LoRA's metadata fields (:class:`LoraInfo`), of writing them into a
safetensors header (:func:`stamp_safetensors`, kohya's ``ss_*`` and ``modelspec.*`` keys kept;
ours under :data:`PREFIX`) and of reading them back (:func:`from_header`). The trainer builds
and writes them (``worker/publish.py``); the library, the CLI and the sidebar read them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import jsonsafe
from ..models import Record

PREFIX = "lora_cloud."
BASE_MODEL = "flux1-dev"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


@dataclass
class LoraInfo(Record):
    """The fields a LoRA carries about its making (sidecar and header alike)."""

    run_id: str
    preset: str
    lora_type: str
    dataset: str
    trigger: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    images: int | None = None
    base_model: str = BASE_MODEL
    steps: int | None = None
    epochs: int | None = None
    rank: int | None = None
    alpha: float | None = None
    learning_rate: float | None = None
    resolution: int | None = None
    final_loss: float | None = None
    gpu: str | None = None
    dph: float | None = None  # the last instance's $/hr
    cost_usd: float | None = None  # estimated: each attempt's $/hr x its hours (worker/publish.py)
    created_at: float | None = None  # epoch seconds
    date: str | None = None  # the same, ISO 8601 UTC, for people

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


_STRING_FIELDS = frozenset(f.name for f in dataclasses.fields(LoraInfo) if f.type in ("str", "str | None"))


def iso_date(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def header_metadata(info: LoraInfo) -> dict[str, str]:
    """``info`` as safetensors metadata (text values): strings as they are, anything else as
    JSON; ``None`` is left out."""
    out = {}
    for name, value in info.to_dict().items():
        if value is None:
            continue
        out[PREFIX + name] = value if name in _STRING_FIELDS else json.dumps(value, sort_keys=True)
    return out


def from_header(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Our fields back from a header's metadata (unknown or unreadable values are skipped: a
    header is untrusted input)."""
    out: dict[str, Any] = {}
    known = set(LoraInfo.names())
    for key, raw in metadata.items():
        if not isinstance(key, str) or not key.startswith(PREFIX) or not isinstance(raw, str):
            continue
        name = key[len(PREFIX):]
        if name not in known:
            continue
        if name in _STRING_FIELDS:
            out[name] = raw
            continue
        try:
            out[name] = jsonsafe.loads(raw)
        except ValueError:
            continue
    return out


def _read_header(f) -> tuple[int, dict[str, Any]]:
    head = f.read(8)
    if len(head) < 8:
        raise ValueError("not a safetensors file: shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", head)
    if length == 0 or length > MAX_HEADER_BYTES:
        raise ValueError("not a safetensors file: bad header length")
    raw = f.read(length)
    if len(raw) != length:
        raise ValueError("not a safetensors file: truncated header")
    try:  # a downloaded file is anyone's: within bounds, so a deep header is a clear error, not a crash
        header = jsonsafe.loads(raw, max_bytes=MAX_HEADER_BYTES)
    except ValueError as exc:
        raise ValueError(f"not a safetensors file we can read: the header is {exc}") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file: the header is not a JSON object")
    return length, header


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a local safetensors file (reads the header only)."""
    with open(path, "rb") as f:
        _length, header = _read_header(f)
    meta = header.get("__metadata__") or {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def stamp_safetensors(path: str | Path, extra: Mapping[str, str]) -> None:
    """Add ``extra`` to the file's ``__metadata__``, keeping every other key (kohya's ``ss_*``)
    and the tensor bytes as they are; written through a temporary file and renamed in."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.stamp")
    with open(path, "rb") as src:
        _length, header = _read_header(src)
        meta = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else {}
        meta.update({str(k): str(v) for k, v in extra.items()})
        header["__metadata__"] = meta
        head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        head += b" " * (-len(head) % 8)  # the data stays 8-byte aligned, as safetensors writes it
        with open(tmp, "wb") as dst:
            dst.write(struct.pack("<Q", len(head)) + head)
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(tmp, path)
