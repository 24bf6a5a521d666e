"""What the templates hand their callers: typed records. The routes answer with ``to_dict()``
(the sidebar's contract: same keys and nulls as ever), the CLI reads their attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the ComfyUI client's module (aiohttp) is imported by what queues
    from ...remote.comfyui_answers import OutputImage


@dataclass(frozen=True)
class TemplateInfo:
    """A template: what it does, its parameters with their defaults (None: required), the
    custom-node packs it needs."""

    name: str
    title: str
    description: str
    packs: tuple[str, ...]
    takes_image: bool
    parameters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "description": self.description, "packs": list(self.packs),
                "takes_image": self.takes_image, "parameters": dict(self.parameters)}


@dataclass(frozen=True)
class LoraTestStatus:
    """Where a LoRA test queued here is (``queued``, ``running``, ``done``, ``failed`` or
    ``unknown``), and the images it made so far."""

    prompt_id: str
    state: str
    error: str | None
    images: tuple[OutputImage, ...]
    lora: str
    template: str

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "unknown")

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, "state": self.state, "error": self.error,
                "images": [i.to_dict() for i in self.images], "lora": self.lora, "template": self.template}
