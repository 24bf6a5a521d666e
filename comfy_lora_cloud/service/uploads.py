"""Datasets built in the browser: files staged on this machine, checked on arrival, optionally
run through the preparation pipeline and reviewed, then published by the one dataset upload.

The one home of "the sidebar's upload and preparation"; what it publishes goes through
:meth:`Library.upload_dataset <comfy_lora_cloud.service.library.Library.upload_dataset>` (manifest
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
from typing import Any, Mapping

from ..errors import ConfigError, DatasetError, ImageLoadError, ObjectNotFound
from ..models import validate_name
from ..storage.layout import CAPTION_SUFFIX, IMAGE_SUFFIXES, MANIFEST
from .captions import clean_caption
from .files import check_file_name

MAX_FILE_BYTES = 40 * 1024 * 1024  # one photo; a bigger file is not a training image
MAX_CAPTION_BYTES = 64 * 1024
MAX_FILES = 2000  # one staged dataset
STAGED, PREPARED = "files", "prepared"
CAPTION_MODELS = ("none", "florence", "blip2")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


class Uploads:
    """The sidebar's staged uploads and preparation reviews (``app.uploads``)."""

    def __init__(self, app: Any):
        self.app = app
        self.workers: int | None = None  # pipeline workers (None: one per core); tests use 1
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ---- where ---------------------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        validate_name(name, "dataset name")
        return self.app.settings.home / "uploads" / name

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

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
    async def put(self, name: str, file: str, data: bytes, sha256: str | None = None) -> dict[str, Any]:
        """Stage one file. ``{"file", "ok": True, "size", "sha256"}``, or ``{"file", "ok": False,
        "reason"}`` for a file that is not what a dataset can hold (the others go on)."""
        kind = self._kind(file)
        folder = self.folder(name) / STAGED
        return await asyncio.to_thread(self._put, folder, file, kind, data, sha256)

    def _put(self, folder: Path, file: str, kind: str, data: bytes, sha256: str | None) -> dict[str, Any]:
        def refused(reason: str) -> dict[str, Any]:
            return {"file": file, "ok": False, "reason": reason}

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
            from ..dataset.load import decode_image

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
        out = {"file": file, "ok": True, "size": len(data), "sha256": digest}
        if kind == "image":
            out.update(width=width, height=height)
        return out

    async def status(self, name: str) -> dict[str, Any]:
        """What is staged for ``name`` (for resuming): ``{"files": [{file, size, sha256}], "prepared"}``."""
        folder = self.folder(name)

        def run() -> dict[str, Any]:
            staged = folder / STAGED
            files = [] if not staged.is_dir() else [
                {"file": p.name, "size": p.stat().st_size, "sha256": _sha256(p)}
                for p in sorted(staged.iterdir()) if p.is_file() and not p.name.startswith(".")]
            return {"dataset": name, "files": files, "bytes": sum(f["size"] for f in files),
                    "prepared": (folder / PREPARED / MANIFEST).is_file()}

        return await asyncio.to_thread(run)

    async def remove(self, name: str, file: str) -> dict[str, Any]:
        """Take one staged file out again."""
        self._kind(file)
        path = self.folder(name) / STAGED / file
        await asyncio.to_thread(lambda: path.unlink(missing_ok=True))
        return {"dataset": name, "file": file, "removed": True}

    async def discard(self, name: str) -> dict[str, Any]:
        folder = self.folder(name)
        await asyncio.to_thread(lambda: shutil.rmtree(folder, ignore_errors=True))
        return {"dataset": name, "discarded": True}

    # ---- 2. prepare and review -------------------------------------------------------------------
    async def prepare(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Run the preparation pipeline over the staged files (crop for ``lora_type``, bucket,
        auto-caption with ``caption``: none, florence or blip2); returns :meth:`review`."""
        from ..dataset.bucket import BucketConfig
        from ..dataset.pipeline import PrepareOptions

        lora_type = body.get("lora_type", "character")
        caption = body.get("caption", "none")
        trigger = body.get("trigger") or None
        if caption not in CAPTION_MODELS:
            raise ConfigError(f"caption must be one of {', '.join(CAPTION_MODELS)}")
        if trigger is not None and not isinstance(trigger, str):
            raise ConfigError("trigger must be a string")
        resolution = body.get("resolution", 1024)
        if isinstance(resolution, bool) or not isinstance(resolution, int) or not 256 <= resolution <= 2048:
            raise ConfigError("resolution must be a whole number from 256 to 2048")
        settings = self.app.settings
        try:
            options = PrepareOptions(
                lora_type=lora_type, trigger=trigger, caption=caption, caption_model=settings.caption_model_path,
                bucket=BucketConfig(resolution=resolution, max_reso=max(resolution, 1024)),
                overwrite_captions=bool(body.get("overwrite_captions", False)), workers=self.workers)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        folder = self.folder(name)

        def run() -> None:
            from ..dataset.pipeline import prepare_dataset

            staged = folder / STAGED
            if not staged.is_dir() or not any(staged.iterdir()):
                raise ObjectNotFound(f"nothing is staged for {name!r}: drop images first")
            with self._lock(name):
                shutil.rmtree(folder / PREPARED, ignore_errors=True)
                prepare_dataset(staged, folder / PREPARED, options, name=name)

        await asyncio.to_thread(run)
        return await self.review(name)

    async def review(self, name: str) -> dict[str, Any]:
        """The prepared images to review: ``{"items": [{image, source, caption, caption_origin,
        width, height, bucket, crop_box, warnings}], "skipped", "duplicates", "report",
        "settings"}``."""
        folder = self.folder(name)

        def run() -> dict[str, Any]:
            from ..dataset.validate import validate_folder

            manifest = self._manifest(folder / PREPARED)
            items = []
            for entry in manifest.get("files", []):
                items.append({k: entry.get(k) for k in ("image", "source", "caption", "caption_origin", "width",
                                                         "height", "bucket", "crop_box", "crop_method", "faces")})
            report = validate_folder(folder / PREPARED).to_dict()
            return {"dataset": name, "items": items, "skipped": manifest.get("skipped", []),
                    "duplicates": manifest.get("duplicates", []), "warnings": manifest.get("warnings", []),
                    "settings": {k: manifest.get("settings", {}).get(k) for k in ("lora_type", "trigger", "caption")},
                    "report": report}

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
        path = self.folder(name) / stage / file

        def run() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise ObjectNotFound(f"no {stage} file {file!r} for {name!r}") from None

        return served_file(await asyncio.to_thread(run), file)

    # ---- 3. publish ----------------------------------------------------------------------------
    async def publish(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Publish ``datasets/<name>/``: the prepared images after the review's ``decisions``
        (``{image: {"keep": bool, "caption": str}}``) when ``prepared`` is true, else the staged
        files as they are. ``mode``: ``create`` (refused when the dataset exists), ``replace``
        or ``merge``; ``force`` (a boolean) changes a dataset even while a live run trains on it
        (without it: :class:`DatasetInUse`, whose 409 answer names the runs). Returns the upload's
        result with ``report`` (validation) added."""
        from ..dataset.validate import validate_folder

        mode = body.get("mode", "create")
        if mode not in ("create", "replace", "merge"):
            raise ConfigError("mode must be create, replace or merge")
        prepared = bool(body.get("prepared", False))
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise ConfigError("force must be true or false")
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

        with self._hold(name):
            report = await asyncio.to_thread(apply)
            result = await self.app.library.upload_dataset(
                src, name, replace=mode == "replace", merge=mode == "merge", force=force,
                remedy="choose replace (it becomes exactly these images) or merge (they are added), or another name")
        await self.discard(name)
        return {**result, "report": report}

    @contextlib.contextmanager
    def _hold(self, name: str):
        lock = self._lock(name)
        if not lock.acquire(blocking=False):
            raise ConfigError(f"{name!r} is being prepared or published right now")
        try:
            yield
        finally:
            lock.release()

    @staticmethod
    def _apply_decisions(prepared: Path, decisions: Mapping[str, Any]) -> None:
        manifest = Uploads._manifest(prepared)
        files = manifest.get("files", [])
        known = {e.get("image") for e in files}
        unknown = sorted(set(decisions) - known)
        if unknown:
            raise ConfigError(f"no prepared image named {unknown[0]!r}")
        kept = []
        for entry in files:
            image = entry.get("image")
            decision = decisions.get(image) or {}
            if not isinstance(decision, dict):
                raise ConfigError(f"the decision for {image!r} must be an object")
            caption_file = prepared / Path(image).with_suffix(CAPTION_SUFFIX).name
            if decision.get("keep", True) is False:
                (prepared / image).unlink(missing_ok=True)
                caption_file.unlink(missing_ok=True)
                continue
            if "caption" in decision:
                text = clean_caption(decision["caption"])
                caption_file.write_text(text + "\n" if text else "", encoding="utf-8")
                if text != entry.get("caption"):
                    entry = {**entry, "caption": text, "caption_origin": "edited"}
            kept.append(entry)
        if not kept:
            raise DatasetError("every image was dropped: keep at least one")
        manifest["files"] = kept
        dropped = known - {e.get("image") for e in kept}
        manifest["duplicates"] = [[n for n in group if n not in dropped] for group in manifest.get("duplicates", [])]
        manifest["duplicates"] = [g for g in manifest["duplicates"] if len(g) > 1]
        (prepared / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
