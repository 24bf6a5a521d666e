"""Datasets and LoRAs in storage: list, upload, download, delete.

Blocking functions over a :class:`~comfy_lora_cloud.storage.Storage`; coroutine callers (routes,
nodes) run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
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
MAX_CAPTION_BYTES = 64 * 1024  # a caption is a line or two; a bigger .txt is not read
MAX_LORA_READ_BYTES = 4 * 1024**3  # a safetensors header needs the whole file (no ranged read): cap it


def _servable(name: str) -> bool:
    """A file name the image routes would accept (others are left out of image lists)."""
    from .files import check_file_name

    try:
        check_file_name(name)
    except ConfigError:
        return False
    return True


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
        if not isinstance(old, dict) or old.get("files") != manifest["files"]:
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


# ---- the service -----------------------------------------------------------------------------
class Library:
    """Datasets and LoRAs for every edge (routes, nodes, CLI), over the app's current storage.

    Coroutines that never block their loop: storage and Pillow work runs in worker threads. The
    one home of: listing, uploading, downloading and deleting datasets; listing, downloading
    (checksum verified, into the app's LoRA folder unless told otherwise) and deleting LoRAs.
    """

    def __init__(self, app: Any):
        from .media import Thumbnailer

        self.app = app
        self._header_cache: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._hash_cache: Any = None
        self.thumbnails = Thumbnailer()

    # ---- datasets ----------------------------------------------------------------------------
    async def datasets(self) -> list[dict[str, Any]]:
        return (await self.dataset_listing())["datasets"]

    async def dataset_listing(self) -> dict[str, Any]:
        """``{"datasets", "problems"}``: entries that cannot be read are skipped and reported."""
        found = await asyncio.to_thread(lambda: list_datasets(self.app.storage))
        return {"datasets": [d.to_dict() for d in found.items], "problems": [p.to_dict() for p in found.problems]}

    async def describe(self, name: str) -> Dataset:
        return await asyncio.to_thread(lambda: describe_dataset(self.app.storage, name))

    async def dataset_images(self, name: str) -> list[dict[str, Any]]:
        """Every image of a dataset with its caption (``None`` when it has no .txt)."""
        return await asyncio.to_thread(self._dataset_images, name)

    def _dataset_images(self, name: str) -> list[dict[str, Any]]:
        import concurrent.futures

        storage = self.app.storage
        prefix = layout.dataset_prefix(name)
        objs = storage.list(prefix).objects
        if not objs:
            raise ObjectNotFound(f"no dataset named {name!r}")
        sizes = {o.key: o.size for o in objs}
        images = [o for o in objs if Path(o.key).suffix.lower() in IMAGE_SUFFIXES and _servable(o.key[len(prefix):])]

        def caption(key: str) -> str | None:
            cap_key = key.rsplit(".", 1)[0] + ".txt"
            if cap_key not in sizes or sizes[cap_key] > MAX_CAPTION_BYTES:  # the listing says how big
                return None
            return storage.read_bytes(cap_key)[:MAX_CAPTION_BYTES].decode("utf-8", errors="replace").strip()

        # one small read per caption: in parallel, since a bucket answers each in tens of ms
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.app.settings.sync_workers) as pool:
            captions = list(pool.map(caption, [o.key for o in images]))
        return [{"file": o.key[len(prefix):], "size": o.size, "caption": c} for o, c in zip(images, captions)]

    async def dataset_captions(self, name: str) -> dict[str, str | None]:
        return {i["file"]: i["caption"] for i in await self.dataset_images(name)}

    async def dataset_image(self, name: str, file: str) -> Any:
        """An image as the browser may get it (a :class:`~.media.ServedFile`): typed by its bytes,
        not its name; anything else as a sandboxed attachment."""
        from .media import read_media, served_file

        key = self._image_key(name, file)
        data = await asyncio.to_thread(lambda: read_media(self.app.storage, key))
        return served_file(data, file)

    async def dataset_thumbnail(self, name: str, file: str, size: int = 256) -> bytes:
        """A JPEG no larger than ``size`` pixels on its long side (one of ``THUMB_SIZES``): byte-
        and pixel-limited, decoded on a bounded pool, cached (:class:`~.media.Thumbnailer`)."""
        from .files import THUMB_SIZES

        if size not in THUMB_SIZES:
            raise ConfigError(f"thumbnail size must be one of {', '.join(map(str, THUMB_SIZES))}")
        key = self._image_key(name, file)
        storage = await asyncio.to_thread(lambda: self.app.storage)
        return await self.thumbnails.thumbnail(storage, key, size)

    @staticmethod
    def _image_key(name: str, file: str) -> str:
        from .files import check_file_name

        check_file_name(file)
        if Path(file).suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"{file!r} is not an image")
        return layout.dataset_prefix(name) + file

    async def upload_dataset(self, src: str | Path, name: str, *, delete_extra: bool = False,
                             progress: Progress | None = None) -> dict[str, Any]:
        settings = self.app.settings
        return await asyncio.to_thread(lambda: upload_dataset(
            self.app.storage, src, name, delete_extra=delete_extra, workers=settings.sync_workers,
            progress=progress, cache=self.hash_cache()))

    async def download_dataset(self, name: str, dest: str | Path, *, progress: Progress | None = None) -> dict[str, Any]:
        settings = self.app.settings
        return await asyncio.to_thread(lambda: download_dataset(
            self.app.storage, name, dest, workers=settings.sync_workers, progress=progress, cache=self.hash_cache()))

    async def delete_dataset(self, name: str) -> dict[str, Any]:
        n = await asyncio.to_thread(lambda: delete_dataset(self.app.storage, name))
        return {"dataset": name, "deleted": n}

    def hash_cache(self) -> Any:
        """Local file checksums remembered between runs, so a re-sync does not re-hash. One per
        app, so what a plan hashed is saved by the transfer that follows it."""
        from ..storage.sync import HashCache

        path = self.app.settings.home / "hash-cache.json"
        if self._hash_cache is None or self._hash_cache.path != path:
            self._hash_cache = HashCache(path)
        return self._hash_cache

    async def prepare(self, source: str, name: str, *, lora_type: str = "character", caption: str = "none",
                      trigger: str | None = None, remove_background: bool = False, caption_model: str | None = None,
                      background_model: str | None = None, resolution: int = 1024, upscale: bool = False,
                      overwrite_captions: bool = False, replace_existing: bool = False, workers: int | None = None,
                      device: str = "auto", progress: Callable[[str, int, int], None] | None = None) -> Any:
        """Crop, bucket and caption photos (a folder, or a dataset in storage) for a LoRA type,
        then publish them as ``datasets/<name>/``. Returns the pipeline's result."""
        from ..dataset.bucket import BucketConfig
        from ..dataset.pipeline import PrepareOptions, prepare_to_storage

        validate_name(name, "dataset name")
        settings = self.app.settings
        try:
            bucket = BucketConfig(resolution=resolution, max_reso=max(resolution, 1024), upscale=upscale)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        options = PrepareOptions(
            lora_type=lora_type, trigger=trigger, remove_background=remove_background,
            background_model=background_model or settings.rembg_model_path, bucket=bucket, caption=caption,
            caption_model=caption_model or settings.caption_model_path, caption_device=device,
            overwrite_captions=overwrite_captions, workers=workers,
        )
        return await asyncio.to_thread(lambda: prepare_to_storage(
            self.app.storage, source, name, options, replace_existing=replace_existing, progress=progress))

    async def validate(self, name: str, trigger: str | None = None) -> Any:
        """Check a stored dataset (images, captions, buckets, duplicates, trigger). Returns the report."""
        import tempfile

        from ..dataset.pipeline import download_dataset as pull
        from ..dataset.validate import validate_folder

        def run() -> Any:
            with tempfile.TemporaryDirectory(prefix="lora-cloud-validate-") as tmp:
                folder = pull(self.app.storage, name, tmp)
                return validate_folder(folder, trigger=trigger)

        return await asyncio.to_thread(run)

    # ---- LoRAs -------------------------------------------------------------------------------
    async def loras(self) -> list[dict[str, Any]]:
        """LoRAs in the bucket; ``local`` says whether the LoRA folder has a copy."""
        return (await self.lora_listing())["loras"]

    async def lora_listing(self) -> dict[str, Any]:
        """``{"loras", "problems"}``: entries that cannot be read are skipped and reported."""
        def run() -> dict[str, Any]:
            found = list_loras(self.app.storage)
            out = []
            for lora in found.items:
                d = lora.to_dict()
                d["local"] = (self.app.loras_dir / f"{lora.name}.safetensors").is_file()
                out.append(d)
            return {"loras": out, "problems": [p.to_dict() for p in found.problems]}

        return await asyncio.to_thread(run)

    async def lora_metadata(self, name: str) -> dict[str, Any]:
        """The ``__metadata__`` (kohya's ``ss_*`` keys) of a LoRA's safetensors header, plus the
        bucket's ``<name>.json`` sidecar when there is one."""
        return await asyncio.to_thread(self._lora_metadata, name)

    def _lora_metadata(self, name: str) -> dict[str, Any]:
        from .files import parse_safetensors_header

        storage = self.app.storage
        key = layout.lora_key(name)
        info = storage.stat(key)
        cache_key = (key, info.md5 or str(info.generation))
        header = self._header_cache.get(cache_key)
        if header is None:
            # The Storage protocol has no ranged read, so this fetches the whole object (verified);
            # the result is cached per content hash, and a file over the cap is not fetched at all.
            if info.size > MAX_LORA_READ_BYTES:
                raise DatasetError(f"LoRA {name} is {info.size / 1e9:.1f} GB: too large to read its metadata")
            header = parse_safetensors_header(storage.read_bytes(key))
            self._header_cache[cache_key] = header
        sidecar: dict[str, Any] = {}
        problems: list[dict[str, Any]] = []
        try:
            sidecar = read_lora_sidecar(storage, layout.lora_meta_key(name))
        except ObjectNotFound:
            pass
        except StorageError as exc:
            problems.append(Problem.of(layout.lora_meta_key(name), exc).to_dict())
        return {"name": name, "size": info.size, "md5": info.md5, **header, "info": sidecar, "problems": problems}

    async def download_lora(self, name: str, dest_dir: str | Path | None = None) -> dict[str, Any]:
        """Copy a LoRA into ``dest_dir`` (default: the app's LoRA folder), checksum verified."""
        def run() -> dict[str, Any]:
            path = download_lora(self.app.storage, name, dest_dir or self.app.loras_dir)
            return {"name": name, "path": str(path), "size": path.stat().st_size}

        return await asyncio.to_thread(run)

    async def delete_lora(self, name: str) -> dict[str, Any]:
        n = await asyncio.to_thread(lambda: delete_lora(self.app.storage, name))
        return {"name": name, "deleted": n}
