"""The library service: datasets and LoRAs in the app's current storage, for every edge
(routes, nodes, CLI). The blocking work lives in :mod:`.manifests`, :mod:`.datasets` and
:mod:`.loras`; this runs it in worker threads, and hands the dataset transfers and a
preparation to the app's :class:`~.offload.Offload`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, TYPE_CHECKING

from ...errors import ConfigError, DatasetError, ObjectNotFound, StorageError
from ...models import Dataset, Problem, check_trigger, validate_name
from ...storage import layout
from ...storage.layout import IMAGE_SUFFIXES
from .datasets import UPLOAD_REMEDY, Progress, delete_dataset, download_dataset, upload_dataset
from .files import THUMB_SIZES, check_file_name, parse_safetensors_header
from .listings import Page
from .loras import MAX_LORA_READ_BYTES, delete_lora, download_lora, list_loras, read_lora_sidecar
from .manifests import MAX_CAPTION_BYTES, caption_key, describe_dataset, list_datasets, require_trainable, servable
from .media import Thumbnailer, read_media, served_file
from .offload import Offload
from .views import (DatasetDeleted, DatasetDownload, DatasetImage, DatasetListing, DatasetUpload, LibraryLora,
                    LoraDeleted, LoraDownload, LoraListing, LoraMetadata)

if TYPE_CHECKING:
    from ..core import Core


class Library:
    """Datasets and LoRAs for every edge (routes, nodes, CLI), over the app's current storage.

    Coroutines that never block their loop: storage and Pillow work runs in worker threads. The
    one home of: listing, uploading, downloading and deleting datasets; listing, downloading
    (checksum verified, into the app's LoRA folder unless told otherwise) and deleting LoRAs.
    """

    def __init__(self, core: Core, offload: Offload):
        self.core = core
        self.offload = offload  # where the sync engine and a preparation run (a worker process in ComfyUI)
        self._header_cache: dict[tuple[str, str | None], dict[str, Any]] = {}
        self._hash_cache: Any = None
        self.thumbnails = Thumbnailer()

    # ---- datasets ----------------------------------------------------------------------------
    async def datasets(self) -> list[Dataset]:
        return list((await self.dataset_listing()).datasets)

    async def dataset_listing(self, offset: int = 0, limit: int | None = None) -> DatasetListing:
        """One page of the datasets by name (all of them without ``limit``); entries that cannot
        be read are skipped and reported in ``problems``. Costs one paged listing plus the
        manifests of the page (see :mod:`.listings`)."""
        page = Page(offset, limit)
        found = await asyncio.to_thread(lambda: list_datasets(self.core.storage, page,
                                                              workers=self.core.settings.sync_workers))
        return DatasetListing(datasets=tuple(found.items), problems=tuple(found.problems), total=found.total or 0,
                              offset=page.offset, limit=page.limit)

    async def describe(self, name: str) -> Dataset:
        return await asyncio.to_thread(lambda: describe_dataset(self.core.storage, name))

    async def require_trainable(self, name: str) -> Dataset:
        """The dataset, if it is complete and has images (see :func:`require_trainable`)."""
        return await asyncio.to_thread(lambda: require_trainable(self.core.storage, name))

    async def dataset_images(self, name: str) -> list[DatasetImage]:
        """Every image of a dataset with its caption (``None`` when it has no .txt)."""
        return await asyncio.to_thread(self._dataset_images, name)

    def _dataset_images(self, name: str) -> list[DatasetImage]:
        import concurrent.futures

        storage = self.core.storage
        prefix = layout.dataset_prefix(name)
        objs = storage.list(prefix).objects
        if not objs:
            raise ObjectNotFound(f"no dataset named {name!r}")
        sizes = {o.key: o.size for o in objs}
        images = [o for o in objs if Path(o.key).suffix.lower() in IMAGE_SUFFIXES and servable(o.key[len(prefix):])]

        def caption(key: str) -> str | None:
            cap_key = caption_key(key)
            if cap_key not in sizes or sizes[cap_key] > MAX_CAPTION_BYTES:  # the listing says how big
                return None
            return storage.read_bytes(cap_key)[:MAX_CAPTION_BYTES].decode("utf-8", errors="replace").strip()

        # one small read per caption: in parallel, since a bucket answers each in tens of ms
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.core.settings.sync_workers) as pool:
            captions = list(pool.map(caption, [o.key for o in images]))
        return [DatasetImage(file=o.key[len(prefix):], size=o.size, caption=c) for o, c in zip(images, captions)]

    async def dataset_captions(self, name: str) -> dict[str, str | None]:
        return {i.file: i.caption for i in await self.dataset_images(name)}

    async def dataset_image(self, name: str, file: str) -> Any:
        """An image as the browser may get it (a :class:`~.media.ServedFile`): typed by its bytes,
        not its name; anything else as a sandboxed attachment."""
        key = self._image_key(name, file)
        data = await asyncio.to_thread(lambda: read_media(self.core.storage, key))
        return served_file(data, file)

    async def dataset_thumbnail(self, name: str, file: str, size: int = 256) -> bytes:
        """A JPEG no larger than ``size`` pixels on its long side (one of ``THUMB_SIZES``): byte-
        and pixel-limited, decoded on a bounded pool, cached (:class:`~.media.Thumbnailer`)."""
        if size not in THUMB_SIZES:
            raise ConfigError(f"thumbnail size must be one of {', '.join(map(str, THUMB_SIZES))}")
        key = self._image_key(name, file)
        storage = await asyncio.to_thread(lambda: self.core.storage)
        return await self.thumbnails.thumbnail(storage, key, size)

    @staticmethod
    def _image_key(name: str, file: str) -> str:
        check_file_name(file)
        if Path(file).suffix.lower() not in IMAGE_SUFFIXES:
            raise ConfigError(f"{file!r} is not an image")
        return layout.dataset_prefix(name) + file

    async def upload_dataset(self, src: str | Path, name: str, *, replace: bool = False, merge: bool = False,
                             progress: Progress | None = None, remedy: str = UPLOAD_REMEDY,
                             skip_bad: bool = False, force: bool = False) -> DatasetUpload:
        """The one dataset upload (:func:`upload_dataset`): every image decoded first, manifest
        last, one writer at a time, an existing dataset only with ``replace`` or ``merge``, and
        not one a live run trains on unless ``force``."""
        settings = self.core.settings
        return await asyncio.to_thread(lambda: upload_dataset(
            self.core.storage, src, name, replace=replace, merge=merge, workers=settings.sync_workers,
            progress=progress, cache=self.hash_cache(), remedy=remedy, clock=self.core.clock, skip_bad=skip_bad,
            force=force, transfers=self.offload))

    async def download_dataset(self, name: str, dest: str | Path, *, progress: Progress | None = None,
                               require_complete: bool = True) -> DatasetDownload:
        """The one dataset download (:func:`download_dataset`)."""
        settings = self.core.settings
        return await asyncio.to_thread(lambda: download_dataset(
            self.core.storage, name, dest, workers=settings.sync_workers, progress=progress, cache=self.hash_cache(),
            require_complete=require_complete, transfers=self.offload))

    async def delete_dataset(self, name: str) -> DatasetDeleted:
        n = await asyncio.to_thread(lambda: delete_dataset(self.core.storage, name))
        return DatasetDeleted(dataset=name, deleted=n)

    def hash_cache(self) -> Any:
        """Local file checksums remembered between runs, so a re-sync does not re-hash. One per
        app, so what a plan hashed is saved by the transfer that follows it."""
        from ...storage.sync import HashCache

        path = self.core.settings.home / "hash-cache.json"
        if self._hash_cache is None or self._hash_cache.path != path:
            self._hash_cache = HashCache(path)
        return self._hash_cache

    async def prepare(self, source: str, name: str, *, lora_type: str = "character", caption: str = "none",
                      trigger: str | None = None, remove_background: bool = False, caption_model: str | None = None,
                      background_model: str | None = None, resolution: int = 1024, upscale: bool = False,
                      overwrite_captions: bool = False, replace_existing: bool = False, workers: int | None = None,
                      device: str = "auto", progress: Callable[[str, int, int], None] | None = None,
                      force: bool = False) -> Any:
        """Crop, bucket and caption photos (a folder, or a dataset in storage) for a LoRA type,
        then publish them as ``datasets/<name>/``. Returns the pipeline's result. Replacing a
        dataset a live run trains on is refused (:class:`DatasetInUse`) unless ``force``."""
        from ...dataset.bucket import BucketConfig
        from ...dataset.pipeline import PrepareOptions

        name = validate_name(name, "dataset name")
        trigger = check_trigger(trigger)
        settings = self.core.settings
        if isinstance(resolution, bool) or not isinstance(resolution, int) or not 256 <= resolution <= 2048 \
                or resolution % 64:  # the training resolution's range (training.presets.LIMITS)
            raise ConfigError(f"resolution must be a multiple of 64 from 256 to 2048 pixels (Flux trains at 512-1024), "
                              f"not {resolution!r}")
        if workers is not None and not 1 <= workers <= 256:
            raise ConfigError(f"workers must be from 1 to 256, not {workers!r}")
        try:
            bucket = BucketConfig(resolution=resolution, max_reso=max(resolution, 1024), upscale=upscale)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        options = PrepareOptions(
            lora_type=lora_type, trigger=trigger, remove_background=remove_background,
            background_model=background_model or settings.rembg_model_path, bucket=bucket, caption=caption,
            caption_model=caption_model or settings.caption_model_path, caption_device=device,
            overwrite_captions=overwrite_captions, workers=workers,
        )
        return await asyncio.to_thread(lambda: self.offload.prepare(  # a worker process, from ComfyUI
            self.core.storage, source, name, options, replace_existing=replace_existing, force=force,
            progress=progress))

    async def validate(self, name: str, trigger: str | None = None) -> Any:
        """Check a stored dataset (images, captions, buckets, duplicates, trigger). Returns the report."""
        import tempfile

        from ...dataset.validate import validate_folder

        def run() -> Any:
            with tempfile.TemporaryDirectory(prefix="lora-cloud-validate-") as tmp:
                # whatever is there, complete or not: finding what is wrong is the point
                download_dataset(self.core.storage, name, tmp, require_complete=False, transfers=self.offload)
                return validate_folder(Path(tmp), trigger=trigger)

        return await asyncio.to_thread(run)

    # ---- LoRAs -------------------------------------------------------------------------------
    async def loras(self) -> list[LibraryLora]:
        """LoRAs in the bucket; ``local`` says whether the LoRA folder has a copy."""
        return list((await self.lora_listing()).loras)

    async def lora_listing(self, offset: int = 0, limit: int | None = None) -> LoraListing:
        """One page of the LoRAs by name (all without ``limit``), their sidecars read for that
        page only; entries that cannot be read are skipped and reported."""
        page = Page(offset, limit)

        def run() -> LoraListing:
            found = list_loras(self.core.storage, page, workers=self.core.settings.sync_workers)
            loras = tuple(LibraryLora(lora, (self.core.loras_dir / layout.lora_file_name(lora.name)).is_file())
                          for lora in found.items)
            return LoraListing(loras=loras, problems=tuple(found.problems), total=found.total or 0,
                               offset=page.offset, limit=page.limit)

        return await asyncio.to_thread(run)

    async def lora_metadata(self, name: str) -> LoraMetadata:
        """The ``__metadata__`` (kohya's ``ss_*`` keys) of a LoRA's safetensors header, plus the
        bucket's ``<name>.json`` sidecar when there is one."""
        return await asyncio.to_thread(self._lora_metadata, name)

    def _lora_metadata(self, name: str) -> LoraMetadata:
        storage = self.core.storage
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
        problems: list[Problem] = []
        try:
            sidecar = read_lora_sidecar(storage, layout.lora_meta_key(name))
        except ObjectNotFound:
            pass
        except StorageError as exc:
            problems.append(Problem.of(layout.lora_meta_key(name), exc))
        from ...training.lora_meta import from_header

        # "lora_cloud": what made it, as its own header says (the trainer writes the same fields
        # into the header and the sidecar: the header is what a downloaded file keeps)
        return LoraMetadata(name=name, size=info.size, md5=info.md5, metadata=header["metadata"],
                            tensors=header["tensors"], lora_cloud=from_header(header["metadata"]), info=sidecar,
                            problems=tuple(problems))

    async def lora_file_metadata(self, path: str | Path) -> LoraMetadata:
        """The same for a LoRA file on this machine (a download): its header says what made it."""
        def run() -> LoraMetadata:
            from ...training.lora_meta import from_header, read_safetensors_metadata

            p = Path(path).expanduser()
            try:
                meta = read_safetensors_metadata(p)
            except OSError as exc:
                raise ObjectNotFound(f"cannot read {p}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise DatasetError(f"{p.name}: {exc}") from None
            return LoraMetadata(name=p.name.removesuffix(layout.LORA_SUFFIX), path=str(p), size=p.stat().st_size,
                                metadata=meta, lora_cloud=from_header(meta))

        return await asyncio.to_thread(run)

    async def download_lora(self, name: str, dest_dir: str | Path | None = None) -> LoraDownload:
        """Copy a LoRA into ``dest_dir`` (default: the app's LoRA folder) through the one LoRA
        download (:func:`download_lora`)."""
        def run() -> LoraDownload:
            path = download_lora(self.core.storage, name, dest_dir or self.core.loras_dir)
            return LoraDownload(name=name, path=str(path), size=path.stat().st_size)

        return await asyncio.to_thread(run)

    async def delete_lora(self, name: str) -> LoraDeleted:
        n = await asyncio.to_thread(lambda: delete_lora(self.core.storage, name))
        return LoraDeleted(name=name, deleted=n)

