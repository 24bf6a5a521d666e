"""Datasets and LoRAs in storage: list, upload, download, delete.

Blocking functions over a :class:`~comfy_lora_cloud.storage.Storage`; coroutine callers (routes,
nodes) run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, CorruptRecord, DatasetError, ObjectNotFound, StorageError
from ..models import Dataset, Listed, Lora, Problem, validate_name
from ..storage import Storage
from ..storage import layout
from ..storage.base import checksum_file, read_json_record

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DATASET_SUFFIXES = IMAGE_SUFFIXES | {".txt"}

Progress = Callable[[Any], None]  # receives storage.sync.Progress events


def is_dataset_file(rel: str) -> bool:
    """Only images, captions and the manifest travel: no .DS_Store, no thumbs.db, no hidden files."""
    name = rel.rsplit("/", 1)[-1]
    if name.startswith("."):
        return False
    return name == layout.MANIFEST or Path(name).suffix.lower() in DATASET_SUFFIXES


# ---- datasets --------------------------------------------------------------------------------
# Bucket content is untrusted input (the rented host can write it): a listing reads each entry on
# its own, skips one it cannot read and reports it in ``problems``; it never fails as a whole.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_TRIGGER = 200
LORA_TYPES = ("character", "style", "concept")


def list_datasets(storage: Storage) -> Listed[Dataset]:
    """Every dataset in the bucket, and what could not be listed (a bad name, a broken manifest)."""
    found: Listed[Dataset] = Listed()
    for prefix in storage.list(layout.DATASETS, delimiter="/").prefixes:
        name = prefix[len(layout.DATASETS):].rstrip("/")
        try:
            found.items.append(describe_dataset(storage, name, problems=found.problems))
        except (ConfigError, StorageError) as exc:
            found.problems.append(Problem.of(prefix, exc))
    return found


def _manifest_fields(storage: Storage, key: str) -> tuple[str | None, str | None]:
    """``trigger`` and ``lora_type`` from a dataset manifest (top level or under ``settings``);
    raises :class:`CorruptRecord` when the manifest is not one."""
    manifest = read_json_record(storage, key, MAX_MANIFEST_BYTES)
    if not isinstance(manifest, dict):
        raise CorruptRecord(f"{key} is not a JSON object")
    settings = manifest.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise CorruptRecord(f"{key}: settings is not a JSON object")
    trigger = manifest.get("trigger") or settings.get("trigger") or None
    lora_type = manifest.get("lora_type") or settings.get("lora_type") or None
    if trigger is not None and not (isinstance(trigger, str) and len(trigger) <= MAX_TRIGGER
                                    and trigger.isprintable()):
        raise CorruptRecord(f"{key}: trigger is not a short line of text")
    if lora_type is not None and lora_type not in LORA_TYPES:
        raise CorruptRecord(f"{key}: lora_type is not one of {', '.join(LORA_TYPES)}")
    return trigger, lora_type


def describe_dataset(storage: Storage, name: str, *, problems: list[Problem] | None = None) -> Dataset:
    """One dataset's counts and manifest fields. A manifest that cannot be read leaves trigger and
    type unset (reported in ``problems`` when given): the images are still the dataset."""
    prefix = layout.dataset_prefix(name)
    objs = storage.list(prefix).objects
    if not objs:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    images = [o for o in objs if Path(o.key).suffix.lower() in IMAGE_SUFFIXES]
    captions = {o.key.rsplit(".", 1)[0] for o in objs if o.key.endswith(".txt") and o.size > 0}
    captioned = sum(1 for o in images if o.key.rsplit(".", 1)[0] in captions)
    trigger = lora_type = None
    if any(o.key == prefix + layout.MANIFEST for o in objs):
        try:
            trigger, lora_type = _manifest_fields(storage, prefix + layout.MANIFEST)
        except StorageError as exc:
            if problems is not None:
                problems.append(Problem.of(prefix + layout.MANIFEST, exc))
    return Dataset(
        name=name,
        images=len(images),
        bytes=sum(o.size for o in objs),
        captioned=captioned,
        trigger=trigger,
        lora_type=lora_type,
        updated=max((o.updated or 0) for o in objs) or None,
    )


def _local_manifest(src: Path, name: str) -> dict[str, Any]:
    files = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if not p.is_file() or p.is_symlink() or not is_dataset_file(rel) or rel == layout.MANIFEST:
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        c = checksum_file(p)
        cap = p.with_suffix(".txt")
        files.append({
            "file": rel, "size": c.size, "md5": c.md5,
            "caption": cap.read_text(encoding="utf-8", errors="replace").strip() if cap.is_file() else None,
        })
    return {"name": name, "created": time.time(), "files": files, "source": "upload"}


def upload_dataset(
    storage: Storage, src: str | Path, name: str, *, delete_extra: bool = False,
    workers: int = 8, progress: Progress | None = None, cache: Any = None,
) -> dict[str, Any]:
    """Push a local folder of images (+ .txt captions) to ``datasets/<name>/``.

    Only images, captions and ``dataset.json`` travel. A folder without a manifest gets one
    (files, sizes, md5, captions). Re-uploading an unchanged folder moves no bytes.
    """
    from ..storage import sync

    validate_name(name, "dataset name")
    src = Path(src).expanduser()
    if not src.is_dir():
        raise DatasetError(f"{src} is not a folder")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in src.rglob("*") if p.is_file()):
        raise DatasetError(f"{src} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    prefix = layout.dataset_prefix(name)
    plan = sync.plan_push(storage, src, prefix, delete=delete_extra, cache=cache)
    # only images, captions and the manifest travel (no .DS_Store, notes, sidecar files)
    plan.transfers = [t for t in plan.transfers if is_dataset_file(t.rel)]
    plan.skips = [rel for rel in plan.skips if is_dataset_file(rel)]
    result = sync.apply(plan, storage, workers=workers, progress=progress, cache=cache)
    if not (src / layout.MANIFEST).is_file():
        manifest = _local_manifest(src, name)
        key = prefix + layout.MANIFEST
        try:
            old = json.loads(storage.read_bytes(key))
        except (ObjectNotFound, ValueError):
            old = None
        if old is None or old.get("files") != manifest["files"]:
            storage.write_bytes(key, json.dumps(manifest, indent=2).encode(), content_type="application/json")
    return {"dataset": name, "files": result.files, "bytes": result.bytes, "skipped": len(plan.skips),
            "deleted": len(plan.deletes), "seconds": round(result.seconds, 3), "url": f"{storage.url.rstrip('/')}/{prefix}"}


def download_dataset(
    storage: Storage, name: str, dest: str | Path, *, workers: int = 8, progress: Progress | None = None,
    cache: Any = None,
) -> dict[str, Any]:
    from ..storage import sync

    prefix = layout.dataset_prefix(name)
    if not storage.list(prefix).objects:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    dest = Path(dest).expanduser()
    plan = sync.plan_pull(storage, prefix, dest, cache=cache)
    result = sync.apply(plan, storage, workers=workers, progress=progress, cache=cache)
    return {"dataset": name, "files": result.files, "bytes": result.bytes, "skipped": len(plan.skips),
            "path": str(dest), "seconds": round(result.seconds, 3)}


def delete_dataset(storage: Storage, name: str) -> int:
    prefix = layout.dataset_prefix(name)
    n = storage.delete_prefix(prefix)
    if n == 0:
        raise ObjectNotFound(f"no dataset named {name!r} in {storage.url}")
    return n


# ---- LoRAs -----------------------------------------------------------------------------------
MAX_SIDECAR_BYTES = 1024 * 1024


def read_lora_sidecar(storage: Storage, key: str) -> dict[str, Any]:
    """A LoRA's ``<name>.json`` as a JSON object; :class:`CorruptRecord` when it is not one."""
    meta = read_json_record(storage, key, MAX_SIDECAR_BYTES)
    if not isinstance(meta, dict):
        raise CorruptRecord(f"{key} is not a JSON object")
    return meta


def list_loras(storage: Storage) -> Listed[Lora]:
    """LoRAs in the bucket with their sidecars; names no route could use and unreadable sidecars
    are reported in ``problems`` (the LoRA itself is still listed when only its sidecar is bad)."""
    found: Listed[Lora] = Listed()
    objs = storage.list(layout.LORAS, delimiter="/").objects
    metas = {o.key for o in objs if o.key.endswith(".json")}
    for o in objs:
        if not o.key.endswith(".safetensors"):
            continue
        name = o.key[len(layout.LORAS):-len(".safetensors")]
        try:
            validate_name(name, "LoRA name")
        except ConfigError as exc:
            found.problems.append(Problem.of(o.key, exc))
            continue
        meta: dict[str, Any] = {}
        mkey = layout.LORAS + name + ".json"
        if mkey in metas:
            try:
                meta = read_lora_sidecar(storage, mkey)
            except StorageError as exc:
                found.problems.append(Problem.of(mkey, exc))
        found.items.append(Lora(name=name, size=o.size, md5=o.md5, crc32c=o.crc32c, updated=o.updated, metadata=meta))
    return found


def download_lora(storage: Storage, name: str, dest_dir: str | Path) -> Path:
    """Download ``loras/<name>.safetensors`` into ``dest_dir`` (temp file + rename, checksum verified)."""
    key = layout.lora_key(name)
    dest_dir = Path(dest_dir).expanduser()
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{name}.safetensors"
    storage.download_file(key, dest)
    return dest


def delete_lora(storage: Storage, name: str) -> int:
    n = 0
    for key in (layout.lora_key(name), layout.lora_meta_key(name)):
        try:
            storage.delete(key)
            n += 1
        except ObjectNotFound:
            pass
    if n == 0:
        raise ObjectNotFound(f"no LoRA named {name!r} in {storage.url}")
    return n
