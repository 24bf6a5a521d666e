"""Datasets built in the browser: files staged on this machine, checked on arrival, optionally
run through the preparation pipeline and reviewed, then published by the one dataset upload.

The one home of "the sidebar's upload and preparation"; what it publishes goes through
:meth:`Library.upload_dataset <comfy_lora_cloud.service.library.control.Library.upload_dataset>` (manifest
last, one writer at a time, replace or merge), and the preparation is
:func:`~comfy_lora_cloud.dataset.pipeline.prepare_dataset`, the same as ``lora-cloud dataset
prepare``. Stages, each a route:

1. **stage** (:meth:`Uploads.put`): one file at a time into ``<home>/uploads/<name>/files/``.
   Each image is decoded on arrival (:func:`~comfy_lora_cloud.dataset.load.load_image`: the
   format its name claims, not truncated, not a decompression bomb) and refused with the reason
   when it is not one; ``.txt`` captions must be UTF-8 text. A file is written under a temporary
   name and renamed, so a staged file is whole. **Resumable**: :meth:`Uploads.status` lists what
   is staged with sizes and SHA-256, and the sidebar sends only what is missing; staging
   survives a closed tab or a restart, and publishing skips what the bucket already holds.
2. **prepare** (optional, :meth:`Uploads.prepare`): crop for the LoRA type, bucket, auto-caption
   into ``prepared/``; :meth:`Uploads.review` lists each image with its crop box, caption and
   warnings, and the validation report.
3. **publish** (:meth:`Uploads.publish`): the staged files as they are, or the prepared ones after
   the review's decisions (drop an image, edit a caption), become ``datasets/<name>/``; the
   validation report comes back with the result, and the staging is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, TYPE_CHECKING

from ...errors import ConfigError, DatasetError, ImageLoadError, LockHeld, ObjectNotFound
from ...models import check_trigger, validate_name
from ...storage.layout import CAPTION_SUFFIX, IMAGE_SUFFIXES, MANIFEST
from .captions import clean_caption
from .files import check_file_name
from .views import PreparedReview, Published, StagedFile, StagedPut, StagedRemoved, StagedUpload, StagingDiscarded

if TYPE_CHECKING:
    from ..core import Core
    from .control import Library

MAX_FILE_BYTES = 40 * 1024 * 1024  # one photo; a bigger file is not a training image
MAX_CAPTION_BYTES = 64 * 1024
MAX_FILES = 2000  # one staged dataset
STAGED, PREPARED = "files", "prepared"
CAPTION_MODELS = ("none", "florence", "blip2")


def _flag(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """A yes/no field of a body: JSON ``true`` or ``false`` only (``bool("false")`` is True)."""
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


class Uploads:
    """The sidebar's staged uploads and preparation reviews (``app.uploads``)."""

    def __init__(self, core: Core, library: Library):
        self.core = core
        self.library = library
        self.workers: int | None = None  # pipeline workers (None: one per core); tests use 1
        self._steps: dict[str, _Steps] = {}
        self._steps_guard = threading.Lock()

    # ---- where ---------------------------------------------------------------------------------
    @staticmethod
    def _name(name: str) -> str:
        """The dataset name as every step keys it: checked and NFC-normalised, so ``café`` typed
        on a Mac (NFD) and on Linux (NFC) stage into one folder and share one lock."""
        return validate_name(name, "dataset name")

    def folder(self, name: str) -> Path:
        return self.core.settings.home / "uploads" / self._name(name)

    def _steps_of(self, name: str) -> "_Steps":
        with self._steps_guard:
            return self._steps.setdefault(name, _Steps(name))

    @staticmethod
    def _kind(file: str) -> str:
        check_file_name(file)
        suffix = Path(file).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return "image"
        if suffix == CAPTION_SUFFIX:
            return "caption"
        raise ConfigError(f"{file}: only images ({', '.join(sorted(IMAGE_SUFFIXES))}) and .txt captions "
                          "go into a dataset")

    # ---- 1. stage ------------------------------------------------------------------------------
    async def put(self, name: str, file: str, data: bytes, sha256: str | None = None) -> StagedPut:
        """Stage one file: kept (``ok``, its size and SHA-256), or refused with the ``reason`` for
        a file that is not what a dataset can hold (the others go on)."""
        name, kind = self._name(name), self._kind(file)
        folder = self.folder(name) / STAGED
        with self._steps_of(name).shared("staging"):
            return await asyncio.to_thread(self._put, folder, file, kind, data, sha256)

    def _put(self, folder: Path, file: str, kind: str, data: bytes, sha256: str | None) -> StagedPut:
        def refused(reason: str) -> StagedPut:
            return StagedPut(file=file, ok=False, reason=reason)

        if len(data) > MAX_FILE_BYTES:
            return refused(f"{len(data) / 1e6:.1f} MB: larger than the {MAX_FILE_BYTES // 2 ** 20} MB a photo needs")
        if not data:
            return refused("the file is empty")
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and sha256.lower() != digest:
            return refused("its bytes arrived damaged (SHA-256 differs from what the browser sent); send it again")
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / file).exists() and sum(1 for _ in folder.iterdir()) >= MAX_FILES:
            return refused(f"a dataset holds at most {MAX_FILES} files")
        if kind == "caption":
            if len(data) > MAX_CAPTION_BYTES:
                return refused(f"a caption is at most {MAX_CAPTION_BYTES // 1024} KB")
            try:
                clean_caption(data.decode("utf-8"))
            except (UnicodeDecodeError, ConfigError) as exc:
                return refused(f"not a caption: {getattr(exc, 'message', 'not UTF-8 text')}")
        else:
            from ...dataset.load import decode_image

            try:  # the format its name claims, whole, not a bomb: what the pipeline will need
                loaded = decode_image(data, name=file, ext=Path(file).suffix.lower())
            except ImageLoadError as exc:
                return refused(exc.message)
            width, height = loaded.original_size
            loaded.image.close()
        tmp = folder / f".part-{os.getpid()}-{threading.get_ident()}-{file}"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, folder / file)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if kind == "image":
            return StagedPut(file=file, ok=True, size=len(data), sha256=digest, width=width, height=height)
        return StagedPut(file=file, ok=True, size=len(data), sha256=digest)

    async def status(self, name: str) -> StagedUpload:
        """What is staged for ``name`` (for resuming), and whether it was prepared."""
        name = self._name(name)
        folder = self.folder(name)

        def run() -> StagedUpload:
            staged = folder / STAGED
            files = () if not staged.is_dir() else tuple(
                StagedFile(file=p.name, size=p.stat().st_size, sha256=_sha256(p))
                for p in sorted(staged.iterdir()) if p.is_file() and not p.name.startswith("."))
            return StagedUpload(dataset=name, files=files, bytes=sum(f.size for f in files),
                                prepared=(folder / PREPARED / MANIFEST).is_file())

        return await asyncio.to_thread(run)

    async def remove(self, name: str, file: str) -> StagedRemoved:
        """Take one staged file out again."""
        name = self._name(name)
        self._kind(file)
        path = self.folder(name) / STAGED / file
        with self._steps_of(name).shared("removing a file"):
            await asyncio.to_thread(lambda: path.unlink(missing_ok=True))
        return StagedRemoved(dataset=name, file=file)

    async def discard(self, name: str) -> StagingDiscarded:
        """Remove everything staged and prepared for ``name``. Refused (:class:`LockHeld`) while
        it is being staged, prepared or published: a discard in the middle of a publish would
        leave the upload a part of the files to publish as if it were the whole dataset."""
        name = self._name(name)
        with self._steps_of(name).alone("discarding"):
            await asyncio.to_thread(self._remove_staging, name)
        return StagingDiscarded(dataset=name)

    def _remove_staging(self, name: str) -> None:
        shutil.rmtree(self.folder(name), ignore_errors=True)

    # ---- 2. prepare and review -------------------------------------------------------------------
    async def prepare(self, name: str, body: Mapping[str, Any]) -> PreparedReview:
        """Run the preparation pipeline over the staged files (crop for ``lora_type``, bucket,
        auto-caption with ``caption``: none, florence or blip2); returns :meth:`review`."""
        from ...dataset.bucket import BucketConfig
        from ...dataset.pipeline import PrepareOptions

        name = self._name(name)
        lora_type = body.get("lora_type", "character")
        caption = body.get("caption", "none")
        trigger = check_trigger(body.get("trigger"))
        overwrite_captions = _flag(body, "overwrite_captions")
        if caption not in CAPTION_MODELS:
            raise ConfigError(f"caption must be one of {', '.join(CAPTION_MODELS)}")
        resolution = body.get("resolution", 1024)
        if isinstance(resolution, bool) or not isinstance(resolution, int) or not 256 <= resolution <= 2048:
            raise ConfigError("resolution must be a whole number from 256 to 2048")
        settings = self.core.settings
        try:
            options = PrepareOptions(
                lora_type=lora_type, trigger=trigger, caption=caption, caption_model=settings.caption_model_path,
                bucket=BucketConfig(resolution=resolution, max_reso=max(resolution, 1024)),
                overwrite_captions=overwrite_captions, workers=self.workers)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        folder = self.folder(name)

        def run() -> None:
            from ...dataset.pipeline import prepare_dataset

            staged = folder / STAGED
            if not staged.is_dir() or not any(staged.iterdir()):
                raise ObjectNotFound(f"nothing is staged for {name!r}: drop images first")
            shutil.rmtree(folder / PREPARED, ignore_errors=True)
            prepare_dataset(staged, folder / PREPARED, options, name=name)

        with self._steps_of(name).alone("preparing"):
            await asyncio.to_thread(run)
        return await self.review(name)

    async def review(self, name: str) -> PreparedReview:
        """The prepared images to review (``items``: image, source, caption, caption_origin,
        width, height, bucket, crop_box, crop_method, faces each), with what was skipped, the
        duplicates, the warnings, the settings and the validation report."""
        name = self._name(name)
        folder = self.folder(name)

        def run() -> PreparedReview:
            from ...dataset.validate import validate_folder

            manifest = self._manifest(folder / PREPARED)
            items = []
            for entry in manifest.get("files", []):
                items.append({k: entry.get(k) for k in ("image", "source", "caption", "caption_origin", "width",
                                                         "height", "bucket", "crop_box", "crop_method", "faces")})
            report = validate_folder(folder / PREPARED).to_dict()
            return PreparedReview(
                dataset=name, items=tuple(items), skipped=manifest.get("skipped", []),
                duplicates=manifest.get("duplicates", []), warnings=manifest.get("warnings", []),
                settings={k: manifest.get("settings", {}).get(k) for k in ("lora_type", "trigger", "caption")},
                report=report)

        return await asyncio.to_thread(run)

    @staticmethod
    def _manifest(prepared: Path) -> dict[str, Any]:
        try:
            return json.loads((prepared / MANIFEST).read_text("utf-8"))
        except FileNotFoundError:
            raise ObjectNotFound("nothing is prepared for review yet") from None
        except ValueError as exc:
            raise DatasetError(f"the prepared manifest cannot be read: {exc}") from None

    async def file(self, name: str, stage: str, file: str) -> Any:
        """A staged (``files``) or prepared (``prepared``) image as the browser may get it."""
        from .media import served_file

        if stage not in (STAGED, PREPARED):
            raise ConfigError("stage must be files or prepared")
        if self._kind(file) != "image":
            raise ConfigError(f"{file!r} is not an image")
        name = self._name(name)
        path = self.folder(name) / stage / file

        def run() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise ObjectNotFound(f"no {stage} file {file!r} for {name!r}") from None

        return served_file(await asyncio.to_thread(run), file)

    # ---- 3. publish ----------------------------------------------------------------------------
    async def publish(self, name: str, body: Mapping[str, Any]) -> Published:
        """Publish ``datasets/<name>/``: the prepared images after the review's ``decisions``
        (``{image: {"keep": bool, "caption": str}}``) when ``prepared`` is true, else the staged
        files as they are. ``mode``: ``create`` (refused when the dataset exists), ``replace``
        or ``merge``; ``force`` (a boolean) changes a dataset even while a live run trains on it
        (without it: :class:`DatasetInUse`, whose 409 answer names the runs). Returns the upload's
        result with ``report`` (validation) added."""
        from ...dataset.validate import validate_folder

        name = self._name(name)
        mode = body.get("mode", "create")
        if mode not in ("create", "replace", "merge"):
            raise ConfigError("mode must be create, replace or merge")
        prepared, force = _flag(body, "prepared"), _flag(body, "force")
        decisions = body.get("decisions") or {}
        if not isinstance(decisions, dict):
            raise ConfigError("decisions must be an object of {image: {keep, caption}}")
        folder = self.folder(name)
        src = folder / (PREPARED if prepared else STAGED)

        def apply() -> dict[str, Any]:
            if prepared:
                self._apply_decisions(src, decisions)
            elif not src.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in src.iterdir()):
                raise ObjectNotFound(f"nothing is staged for {name!r}: drop images first")
            return validate_folder(src).to_dict()

        # held from the first look at the files to the removal of the staging: no discard, drop
        # or new file can change the set between the upload's listing and its manifest
        with self._steps_of(name).alone("publishing"):
            report = await asyncio.to_thread(apply)
            result = await self.library.upload_dataset(
                src, name, replace=mode == "replace", merge=mode == "merge", force=force,
                remedy="choose replace (it becomes exactly these images) or merge (they are added), or another name")
            await asyncio.to_thread(self._remove_staging, name)
        return Published(upload=result, report=report)

    @staticmethod
    def _apply_decisions(prepared: Path, decisions: Mapping[str, Any]) -> None:
        manifest = Uploads._manifest(prepared)
        files = manifest.get("files", [])
        known = {e.get("image") for e in files}
        # a drop already applied by an earlier try of this publish (refused afterwards: the dataset
        # existed, or a live run used it) is done, not unknown: the sidebar sends its decisions again
        unknown = sorted(image for image, decision in decisions.items() if image not in known
                         and not (isinstance(decision, dict) and decision.get("keep") is False))
        if unknown:
            raise ConfigError(f"no prepared image named {unknown[0]!r}")
        # every decision checked before any file changes: a refused one leaves the review whole
        kept, dropped_files, captions = [], [], []
        for entry in files:
            image = entry.get("image")
            decision = decisions.get(image) or {}
            if not isinstance(decision, dict):
                raise ConfigError(f"the decision for {image!r} must be an object")
            caption_file = prepared / Path(image).with_suffix(CAPTION_SUFFIX).name
            keep = decision.get("keep", True)
            if not isinstance(keep, bool):
                raise ConfigError(f"keep for {image!r} must be true or false")
            if not keep:
                dropped_files += [prepared / image, caption_file]
                continue
            if "caption" in decision:
                text = clean_caption(decision["caption"])
                captions.append((caption_file, text + "\n" if text else ""))
                if text != entry.get("caption"):
                    entry = {**entry, "caption": text, "caption_origin": "edited"}
            kept.append(entry)
        if not kept:
            raise DatasetError("every image was dropped: keep at least one")
        for path in dropped_files:
            path.unlink(missing_ok=True)
        for caption_file, text in captions:
            caption_file.write_text(text, encoding="utf-8")
        manifest["files"] = kept
        dropped = known - {e.get("image") for e in kept}
        manifest["duplicates"] = [[n for n in group if n not in dropped] for group in manifest.get("duplicates", [])]
        manifest["duplicates"] = [g for g in manifest["duplicates"] if len(g) > 1]
        (prepared / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class _Steps:
    """Which steps run on one staged upload. Files arrive several at a time (the sidebar sends
    them in parallel) and may be dropped meanwhile: those steps share. Preparing, publishing and
    discarding read or remove the whole set: each runs alone. A step that cannot start now is
    refused at once with :class:`LockHeld` (409), never queued: a discard in the middle of a
    publish would otherwise leave the upload a part of the files to publish as the whole dataset.
    """

    def __init__(self, name: str):
        self.name = name
        self._guard = threading.Lock()  # steps start and end on the event loop and in threads
        self._sharing = 0
        self._alone: str | None = None

    def _refuse(self, doing: str) -> LockHeld:
        busy = self._alone or "receiving files"
        return LockHeld(f"{self.name!r} is {busy} right now; try {doing} again when it is done")

    @contextlib.contextmanager
    def shared(self, doing: str) -> Iterator[None]:
        with self._guard:
            if self._alone is not None:
                raise self._refuse(doing)
            self._sharing += 1
        try:
            yield
        finally:
            with self._guard:
                self._sharing -= 1

    @contextlib.contextmanager
    def alone(self, doing: str) -> Iterator[None]:
        with self._guard:
            if self._alone is not None or self._sharing:
                raise self._refuse(doing)
            self._alone = doing
        try:
            yield
        finally:
            with self._guard:
                self._alone = None
