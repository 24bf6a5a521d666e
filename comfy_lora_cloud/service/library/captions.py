"""Captions of a stored dataset, read with their generation and written only over that generation.

The one home of "edit a caption in the bucket" (the sidebar's inline editor and its undo):
:meth:`Captions.write` writes ``datasets/<name>/<image stem>.txt`` with
``if_generation_match=<the generation the editor read>`` (0: the caption did not exist), so an
edit never overwrites someone else's newer one: that is a :class:`CaptionConflict` (HTTP 409)
carrying the caption as it now is, for the editor to show. Undo is a write like any other, over
the generation the last write returned.

Generations travel as decimal strings: a local folder's are nanosecond times, beyond the
integers JavaScript holds exactly.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, TYPE_CHECKING

from ...errors import ConfigError, ObjectNotFound, PreconditionFailed
from ...models import validate_name
from ...storage import layout
from ...storage.layout import CAPTION_SUFFIX, IMAGE_SUFFIXES
from .files import check_file_name
from .views import Caption, CaptionedImage, CaptionListing

if TYPE_CHECKING:
    from ..core import Core

MAX_CAPTION_CHARS = 4000  # a caption is a line or two; kohya reads the whole file into the prompt
_GENERATION_RE = re.compile(r"^[0-9]{1,20}$")


class CaptionConflict(PreconditionFailed):
    """Someone else changed the caption since it was read."""

    def __init__(self, message: str, current: Caption):
        super().__init__(message)
        self.current = current


def caption_key(name: str, file: str) -> str:
    return layout.dataset_prefix(name) + file.rsplit(".", 1)[0] + CAPTION_SUFFIX


def parse_generation(value: Any) -> int:
    """A generation from a request: a decimal string (or a small integer); 0 means "none yet"."""
    if isinstance(value, bool):
        raise ConfigError("generation must be a decimal string")
    if isinstance(value, int) and 0 <= value < 2 ** 53:
        return value
    if isinstance(value, str) and _GENERATION_RE.match(value):
        return int(value)
    raise ConfigError("generation must be the decimal string the listing gave (\"0\" for a new caption)")


def clean_caption(text: Any) -> str:
    """What is stored: one caption, trimmed, line endings normalised, no control characters."""
    if not isinstance(text, str):
        raise ConfigError("caption must be a string")
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > MAX_CAPTION_CHARS:
        raise ConfigError(f"a caption is at most {MAX_CAPTION_CHARS} characters")
    if any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in text):
        raise ConfigError("a caption must not contain control characters")
    return text


class Captions:
    """Read and write captions of stored datasets (``app.captions``); storage work in threads."""

    def __init__(self, core: Core):
        self.core = core

    async def listing(self, name: str) -> CaptionListing:
        """Every image of a dataset with its caption (``None`` without one) and the caption's
        generation (``"0"`` without one)."""
        validate_name(name, "dataset name")
        return await asyncio.to_thread(self._listing, name)

    def _listing(self, name: str) -> CaptionListing:
        storage = self.core.storage
        prefix = layout.dataset_prefix(name)
        objs = {o.key: o for o in storage.list(prefix).objects}
        if not objs:
            raise ObjectNotFound(f"no dataset named {name!r}")
        images = []
        for key, obj in sorted(objs.items()):
            file = key[len(prefix):]
            if Path(file).suffix.lower() not in IMAGE_SUFFIXES or "/" in file:
                continue
            try:
                check_file_name(file)
            except ConfigError:
                continue
            cap = objs.get(caption_key(name, file))
            text, generation = None, "0"
            if cap is not None:
                text, generation = self._read(storage, cap.key)
            images.append(CaptionedImage(file=file, size=obj.size, caption=text, generation=generation))
        return CaptionListing(dataset=name, images=tuple(images))

    @staticmethod
    def _read(storage: Any, key: str) -> tuple[str | None, str]:
        try:
            info = storage.stat(key)
            if info.size > MAX_CAPTION_CHARS * 4:
                return None, str(info.generation or 0)
            data = storage.read_bytes(key)
        except ObjectNotFound:
            return None, "0"
        return data.decode("utf-8", errors="replace").strip(), str(info.generation or 0)

    async def write(self, name: str, file: str, text: Any, generation: Any) -> Caption:
        """Write one caption over ``generation`` (what the editor read). Returns the caption as
        stored; :class:`CaptionConflict` when someone else wrote first."""
        validate_name(name, "dataset name")
        check_file_name(file)
        if Path(file).suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"{file!r} is not an image")
        expected = parse_generation(generation)
        caption = clean_caption(text)
        return await asyncio.to_thread(self._write, name, file, caption, expected)

    def _write(self, name: str, file: str, caption: str, expected: int) -> Caption:
        storage = self.core.storage
        if not storage.exists(layout.dataset_prefix(name) + file):
            raise ObjectNotFound(f"dataset {name!r} has no image {file!r}")
        key = caption_key(name, file)
        try:
            info = storage.write_bytes(key, (caption + "\n").encode("utf-8") if caption else b"",
                                       if_generation_match=expected, content_type="text/plain; charset=utf-8")
        except PreconditionFailed:
            text, generation = self._read(storage, key)
            raise CaptionConflict(
                f"the caption of {file} was changed by someone else since you opened it; "
                "theirs is shown now, edit it again to change it",
                Caption(file=file, caption=text, generation=generation)) from None
        return Caption(file=file, caption=caption, generation=str(info.generation or 0))
