"""What the library hands its callers: typed records, one per answer.

The services return these; the routes answer with ``to_dict()`` and the CLI reads their
attributes (its ``--json`` prints ``to_dict()``). ``to_dict()`` is the HTTP contract the sidebar
reads, so it keeps its keys, nesting and nulls exactly; a dataset and a LoRA themselves stay
:class:`~comfy_lora_cloud.models.Dataset` and :class:`~comfy_lora_cloud.models.Lora`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...models import Dataset, Lora, Problem


def _problems(problems: tuple[Problem, ...]) -> list[dict[str, Any]]:
    return [p.to_dict() for p in problems]


# ---- datasets ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetListing:
    """One page of the datasets by name, and the entries that could not be read."""

    datasets: tuple[Dataset, ...]
    problems: tuple[Problem, ...]
    total: int
    offset: int
    limit: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"datasets": [d.to_dict() for d in self.datasets], "problems": _problems(self.problems),
                "total": self.total, "offset": self.offset, "limit": self.limit}


@dataclass(frozen=True)
class DatasetImage:
    """An image of a stored dataset and its caption (None when it has no .txt)."""

    file: str
    size: int
    caption: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "size": self.size, "caption": self.caption}


@dataclass(frozen=True)
class DatasetUpload:
    """What the one dataset upload did; ``bad`` lists the images ``skip_bad`` left out
    (``{"file", "reason"}`` each)."""

    dataset: str
    result: str  # created | replaced | merged | unchanged
    resumed: bool
    files: int
    bytes: int
    skipped: int
    deleted: int
    seconds: float
    url: str
    bad: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "result": self.result, "resumed": self.resumed, "files": self.files,
                "bytes": self.bytes, "skipped": self.skipped, "deleted": self.deleted, "seconds": self.seconds,
                "url": self.url, "bad": [dict(b) for b in self.bad]}


@dataclass(frozen=True)
class DatasetDownload:
    """What the one dataset download brought into ``path``."""

    dataset: str
    files: int
    bytes: int
    skipped: int
    path: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "files": self.files, "bytes": self.bytes, "skipped": self.skipped,
                "path": self.path, "seconds": self.seconds}


@dataclass(frozen=True)
class DatasetDeleted:
    dataset: str
    deleted: int  # objects

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "deleted": self.deleted}


# ---- LoRAs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LibraryLora:
    """A LoRA in the bucket, and whether the LoRA folder has a copy."""

    lora: Lora
    local: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.lora.to_dict(), "local": self.local}


@dataclass(frozen=True)
class LoraListing:
    """One page of the LoRAs by name, and the entries that could not be read."""

    loras: tuple[LibraryLora, ...]
    problems: tuple[Problem, ...]
    total: int
    offset: int
    limit: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"loras": [lora.to_dict() for lora in self.loras], "problems": _problems(self.problems),
                "total": self.total, "offset": self.offset, "limit": self.limit}


@dataclass(frozen=True)
class LoraMetadata:
    """What made a LoRA: its safetensors header's ``__metadata__`` (kohya's ``ss_*``), the
    lora-cloud fields read from it, and the bucket's sidecar (``info``). A LoRA in the bucket
    has ``md5`` and a tensor count; a file on this machine has its ``path`` instead."""

    name: str
    size: int
    metadata: dict[str, str]
    lora_cloud: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    md5: str | None = None
    tensors: int | None = None
    path: str | None = None  # set: a file on this machine, not the bucket's

    def to_dict(self) -> dict[str, Any]:
        if self.path is not None:
            head: dict[str, Any] = {"name": self.name, "path": self.path, "size": self.size, "metadata": self.metadata}
        else:
            head = {"name": self.name, "size": self.size, "md5": self.md5, "metadata": self.metadata,
                    "tensors": self.tensors}
        return {**head, "lora_cloud": self.lora_cloud, "info": self.info, "problems": _problems(self.problems)}


@dataclass(frozen=True)
class LoraDownload:
    name: str
    path: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "size": self.size}


@dataclass(frozen=True)
class LoraDeleted:
    name: str
    deleted: int  # objects

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "deleted": self.deleted}


# ---- captions ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Caption:
    """An image's caption as stored (None without one) and the generation an edit writes over
    (``"0"`` without one)."""

    file: str
    caption: str | None
    generation: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "caption": self.caption, "generation": self.generation}


@dataclass(frozen=True)
class CaptionedImage:
    file: str
    size: int
    caption: str | None
    generation: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "size": self.size, "caption": self.caption, "generation": self.generation}


@dataclass(frozen=True)
class CaptionListing:
    dataset: str
    images: tuple[CaptionedImage, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "images": [i.to_dict() for i in self.images]}


# ---- base weights ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightFile:
    file: str
    repo: str
    cached: bool
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "repo": self.repo, "cached": self.cached, "key": self.key}


@dataclass(frozen=True)
class ModelsStatus:
    """Which base-weights files ``models/`` holds; after a cache, where each came from
    (``cached_from``: file -> "cached" or its origin)."""

    storage: str
    files: tuple[WeightFile, ...]
    complete: bool
    cached_from: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"storage": self.storage, "files": [f.to_dict() for f in self.files],
                               "complete": self.complete}
        if self.cached_from is not None:
            out["cached_from"] = dict(self.cached_from)
        return out


# ---- the sidebar's staged uploads --------------------------------------------------------------
@dataclass(frozen=True)
class StagedPut:
    """One file offered for staging: kept (``ok``, its size and SHA-256; an image's pixels), or
    refused with the ``reason`` (the other files go on)."""

    file: str
    ok: bool
    reason: str | None = None
    size: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        if not self.ok:
            return {"file": self.file, "ok": False, "reason": self.reason}
        out: dict[str, Any] = {"file": self.file, "ok": True, "size": self.size, "sha256": self.sha256}
        if self.width is not None:
            out.update(width=self.width, height=self.height)
        return out


@dataclass(frozen=True)
class StagedFile:
    file: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class StagedUpload:
    """What is staged for a dataset (for resuming), and whether it was prepared."""

    dataset: str
    files: tuple[StagedFile, ...]
    bytes: int
    prepared: bool

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "files": [f.to_dict() for f in self.files], "bytes": self.bytes,
                "prepared": self.prepared}


@dataclass(frozen=True)
class StagedRemoved:
    dataset: str
    file: str

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "file": self.file, "removed": True}


@dataclass(frozen=True)
class StagingDiscarded:
    dataset: str

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "discarded": True}


@dataclass(frozen=True)
class PreparedReview:
    """The prepared images to review. ``items``, ``skipped``, ``duplicates``, ``warnings`` and
    ``report`` are the pipeline's and the validator's own JSON, passed through as they wrote it."""

    dataset: str
    items: tuple[dict[str, Any], ...]
    skipped: list[Any]
    duplicates: list[Any]
    warnings: list[Any]
    settings: dict[str, Any]
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "items": [dict(i) for i in self.items], "skipped": self.skipped,
                "duplicates": self.duplicates, "warnings": self.warnings, "settings": self.settings,
                "report": self.report}


@dataclass(frozen=True)
class Published:
    """A publish: the upload's result and the validation report of what was published."""

    upload: DatasetUpload
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**self.upload.to_dict(), "report": self.report}
