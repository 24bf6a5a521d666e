"""Values that flow between our nodes. Plain, picklable, no secrets, no loop-bound objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetHandle:
    """A dataset in storage (``datasets/<name>/``), as one node hands it to the next."""

    name: str
    storage_url: str
    images: int = 0
    captioned: int = 0
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
