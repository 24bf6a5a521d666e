"""What the dataset nodes do, without ComfyUI: photos -> prepared folder -> captions -> dataset
in storage. ``comfy/nodes/datasets.py`` wraps these in V3 schemas and passes ComfyUI's progress bar and
interrupt flag in as plain callables, so the chain is tested end to end without a ComfyUI server.
The training nodes call the App's nouns directly (``app.runs``, ``app.library``; their plain
parts are ``comfy/nodes/runs.py``).

Intermediate folders live under ``<home>/work/`` and are named by a digest of their input and
options: queueing the same graph again reuses them instead of redoing the work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..dataset.load import SIDECAR_EXTENSIONS
from ..errors import DatasetError
from ..models import validate_name
from ..storage import Storage
from ..storage.layout import IMAGE_SUFFIXES, MANIFEST, dataset_prefix
from .library import IN_PROCESS, Transfers, download_dataset

if TYPE_CHECKING:
    from .library import Library

Progress = Callable[[int, int], None]  # (done, total)
_DONE = ".lora-cloud-complete"


@dataclass(frozen=True)
class ImageSet:
    """A folder of images (and maybe captions) flowing between nodes. ``prepared`` once it
    holds kohya-ready images and a manifest."""

    folder: str
    count: int
    prepared: bool = False
    lora_type: str | None = None
    trigger: str | None = None
    digest: str = ""
    resolution: int | None = None  # the bucket resolution once prepared

    def files(self) -> list[Path]:
        return sorted(p for p in Path(self.folder).iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset in storage (``datasets/<name>/``)."""

    name: str
    storage_url: str
    images: int
    captioned: int
    trigger: str | None = None
    lora_type: str | None = None


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the images and captions: cheap, and changes when a file does."""
    entries = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix.lower() in SIDECAR_EXTENSIONS
                            or p.name == MANIFEST):
            st = p.stat()
            entries.append((p.name, st.st_size, st.st_mtime_ns))
    return digest(entries)


class WorkArea:
    """Content-addressed folders under ``root`` for intermediate results."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def folder(self, step: str, digest: str) -> tuple[Path, bool]:
        """(folder, already complete?). An incomplete folder from a crash is emptied."""
        path = self.root / f"{step}-{digest}"
        if (path / _DONE).is_file():
            return path, True
        if path.exists():
            shutil.rmtree(path)
        return path, False

    @staticmethod
    def complete(path: Path) -> None:
        (path / _DONE).write_text("ok\n")


# ---- Load Images -----------------------------------------------------------------------------
def load_images(source: str, path: str, *, storage: Storage | None, work: WorkArea,
                input_dir: str | None = None, transfers: Transfers = IN_PROCESS) -> ImageSet:
    """``source``: ``folder`` (any folder, only read), ``input`` (a subfolder of ComfyUI's input
    folder) or ``dataset`` (a dataset in storage, downloaded once into the work area, through
    ``transfers``: the app's offload)."""
    if source == "folder":
        folder = Path(path).expanduser()
    elif source == "input":
        if input_dir is None:
            raise DatasetError("ComfyUI's input folder is not known here")
        base = Path(input_dir).resolve()
        folder = (base / path).resolve() if path else base
        if base != folder and base not in folder.parents:
            raise DatasetError(f"{path!r} is outside ComfyUI's input folder")
    elif source == "dataset":
        if storage is None:
            raise DatasetError("no storage configured")
        name = validate_name(path.strip(), "dataset name")
        objs = storage.list(dataset_prefix(name)).objects
        if not objs:
            raise DatasetError(f"no dataset named {name!r} in {storage.url}")
        key = digest("dataset", storage.url, name, sorted((o.key, o.md5) for o in objs))
        folder, done = work.folder("download", key)
        if not done:
            download_dataset(storage, name, folder, transfers=transfers)
            WorkArea.complete(folder)
    else:
        raise DatasetError(f"unknown source {source!r}; use folder, input or dataset")
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise DatasetError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    prepared = (folder / MANIFEST).is_file()
    meta = _manifest_settings(folder) if prepared else {}
    return ImageSet(str(folder), len(images), prepared, meta.get("lora_type"), meta.get("trigger"),
                    folder_fingerprint(folder))


def _manifest_settings(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("settings") or {}
    except (OSError, ValueError):
        return {}


# ---- Crop for Training / Remove Background ---------------------------------------------------
def crop_for_training(images: ImageSet, *, lora_type: str, crop: str = "auto", resolution: int = 1024,
                      trigger: str | None = None, work: WorkArea, progress: Progress | None = None,
                      remove_background: bool = False, background_model: str | None = None,
                      workers: int | None = None) -> ImageSet:
    """Crop (face / object / centre / none, by LoRA type), optionally remove the background,
    and cut every image to a kohya bucket. Captions next to the source images are kept."""
    from ..dataset.bucket import BucketConfig
    from ..dataset.pipeline import PrepareOptions, prepare_dataset

    opts = PrepareOptions(lora_type=lora_type, trigger=trigger or None,
                          crop=None if crop == "auto" else crop,  # type: ignore[arg-type]
                          remove_background=remove_background, background_model=background_model,
                          bucket=BucketConfig(resolution=resolution, max_reso=max(resolution, 1024)),
                          caption="none", workers=workers)
    step = "bg" if remove_background else "crop"
    out, done = work.folder(step, digest(step, images.digest, opts.to_dict()))
    if not done:
        result = prepare_dataset(images.folder, out, opts,
                                 progress=(lambda stage, d, t: progress(d, t)) if progress else None)
        if result.manifest and not result.manifest.get("files"):
            skipped = "; ".join(s["error"] for s in result.manifest.get("skipped", [])[:5])
            raise DatasetError(f"no image could be prepared: {skipped}")
        WorkArea.complete(out)
    files = [p for p in out.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return ImageSet(str(out), len(files), True, lora_type, trigger or None, folder_fingerprint(out), resolution)


# ---- Caption ---------------------------------------------------------------------------------
_captioners: dict[tuple[str, str | None, str], Any] = {}
_captioners_lock = threading.Lock()


def get_captioner(backend: str, model_path: str | None, device: str = "auto"):
    """One loaded model per (backend, path, device) for the life of the process."""
    from ..dataset.caption import Captioner

    key = (backend, model_path, device)
    with _captioners_lock:
        if key not in _captioners:
            _captioners[key] = Captioner(backend, model_path, device)  # type: ignore[arg-type]
        return _captioners[key]


def caption_images(images: ImageSet, *, model: str, model_path: str | None, trigger: str | None,
                   lora_type: str | None = None, overwrite: bool = False, device: str = "auto",
                   work: WorkArea, progress: Progress | None = None) -> ImageSet:
    """Write one ``.txt`` per image (existing captions kept unless ``overwrite``), with the
    trigger word placed as the LoRA type wants. ``model="none"``: the trigger alone."""
    from ..dataset.caption import caption_all, existing_caption

    lora_type = lora_type or images.lora_type or "character"
    trigger = trigger or images.trigger
    key = digest("caption", images.digest, model, model_path, trigger, lora_type, overwrite)
    out, done = work.folder("caption", key)
    if not done:
        out.mkdir(parents=True)
        files = images.files()
        for p in files:  # the images are not re-encoded: link (or copy) them
            try:
                os.link(p, out / p.name)
            except OSError:
                shutil.copy2(p, out / p.name)
        existing = [existing_caption(p) for p in files]
        captioner = get_captioner(model, model_path, device) if model != "none" else None

        class _Lazy:
            def __len__(self) -> int:
                return len(files)

            def __getitem__(self, i: int):
                from PIL import Image

                if progress:
                    progress(i, len(files))
                with Image.open(files[i]) as im:
                    return im.convert("RGB")

        captions = caption_all(captioner, _Lazy(), existing, trigger=trigger, lora_type=lora_type,
                               overwrite=overwrite)
        for p, (text, _origin) in zip(files, captions):
            (out / p.with_suffix(".txt").name).write_text(text + "\n" if text else "", encoding="utf-8")
        manifest_path = Path(images.folder) / MANIFEST
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            by_image = {p.name: c for p, c in zip(files, captions)}
            for entry in manifest.get("files", []):
                if entry.get("image") in by_image:
                    entry["caption"], entry["caption_origin"] = by_image[entry["image"]]
            manifest.setdefault("settings", {}).update(
                {"trigger": trigger, "caption": model, "caption_model": model_path or model, "lora_type": lora_type})
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if progress:
            progress(len(files), len(files))
        WorkArea.complete(out)
    return replace(images, folder=str(out), trigger=trigger, lora_type=lora_type, digest=folder_fingerprint(out))


def preview(images: ImageSet, limit: int = 16) -> list[tuple[Path, str]]:
    """(image, caption) pairs for the Preview node; captions are plain text."""
    out = []
    for p in images.files()[:limit]:
        cap = p.with_suffix(".txt")
        out.append((p, cap.read_text(encoding="utf-8", errors="replace").strip() if cap.is_file() else ""))
    return out


# ---- Save Dataset ----------------------------------------------------------------------------
async def save_dataset(images: ImageSet, name: str, *, library: Library, replace_existing: bool = True,
                       force: bool = False, progress: Progress | None = None) -> DatasetRef:
    """Upload to ``datasets/<name>/`` through the App's library (:meth:`.library.Library.upload_dataset`,
    the upload ``dataset upload`` and the sidebar make: manifest last, one writer at a time).
    ``replace_existing`` makes an existing dataset exactly these images; without it an existing
    dataset is refused. Saving the same folder again moves nothing. A dataset a live run trains
    on is not changed (:class:`DatasetInUse`) unless ``force``."""
    name = validate_name(name.strip(), "dataset name")
    if not images.prepared:
        raise DatasetError("save a prepared dataset: put 'Crop for Training' between 'Load Images' and "
                           "'Save Dataset' so the images fit kohya's buckets")
    await library.upload_dataset(images.folder, name, replace=replace_existing, force=force,
                                 progress=(lambda e: progress(e.files_done, e.files_total)) if progress else None,
                                 remedy="turn on 'replace' to make it exactly these images, or choose another name")
    d = await library.describe(name)
    storage_url = await asyncio.to_thread(lambda: library.core.storage.url)
    return DatasetRef(name, storage_url, d.images, d.captioned, d.trigger, d.lora_type)
