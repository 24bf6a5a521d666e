"""Bring a dataset from the bucket onto the training machine and check it minimally.

kohya writes its latent and text-encoder caches next to the images, so the
images go into a writable local folder, flat. The check here is the least kohya needs (images,
each with a non-empty ``.txt`` caption); the fuller validator lives in ``comfy_lora_cloud.dataset``
and runs before upload.

The pull is of one version of the dataset: an upload writes the manifest (``dataset.json``) last
and removes it first before it changes a dataset, so a manifest that is the same object before
and after the pull means no upload changed the files in between. A dataset without one (an
upload under way or killed), or one whose manifest changed while it was pulled (replaced with
``--force`` under a live run), fails the pull with a clear error instead of training on a mix.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError, ObjectNotFound, StorageError
from ..storage import sync
from ..storage.base import Storage
from ..storage.layout import CAPTION_SUFFIX, KOHYA_IMAGE_SUFFIXES as IMAGE_EXT, MANIFEST, dataset_prefix


def _manifest_version(storage: Storage, name: str) -> tuple | None:
    """The manifest object's identity (generation, checksum, size); None when there is none."""
    try:
        info = storage.stat(dataset_prefix(name) + MANIFEST)
    except ObjectNotFound:
        return None
    return info.generation, info.md5, info.size


def _changed(name: str) -> DatasetError:
    return DatasetError(f"dataset {name!r} changed while this run was pulling it (its {MANIFEST} was replaced or "
                        "removed): the files pulled may mix two versions, so the run stops here instead of training "
                        "on them. Start the run again once the dataset is as it should be")


def pull_dataset(storage: Storage, name: str, image_dir: Path, *, workers: int = 16) -> list[str]:
    """Download images and captions of dataset ``name`` into ``image_dir`` through the sync
    engine (one listing, parallel verified transfers, each landing through a temporary file;
    files already there with the same checksum are kept, so a restarted run does not download
    again). Only the dataset's top level travels; kohya's caches beside the images stay.
    Returns the images. :class:`DatasetError` when the dataset has no manifest or it changed
    during the pull (module docstring)."""
    prefix = dataset_prefix(name)
    start = _manifest_version(storage, name)
    if start is None:
        raise DatasetError(f"dataset {name!r} has no {MANIFEST} in {storage.url}: an upload is changing it or was "
                           "interrupted, so the run does not train on it. Finish the upload (the same `lora-cloud "
                           "dataset upload` again), then start the run again")
    image_dir.mkdir(parents=True, exist_ok=True)

    def wanted(rel: str) -> bool:
        return "/" not in rel and Path(rel).suffix.lower() in IMAGE_EXT | {CAPTION_SUFFIX}

    plan = sync.plan_pull(storage, prefix, image_dir)
    plan.transfers = [t for t in plan.transfers if wanted(t.rel)]
    plan.skips = [rel for rel in plan.skips if wanted(rel)]
    try:
        sync.apply(plan, storage, workers=workers)
    except StorageError as exc:  # a file removed or rewritten under us: say why, when that is why
        if _manifest_version(storage, name) != start:
            raise _changed(name) from exc
        raise
    if _manifest_version(storage, name) != start:
        raise _changed(name)
    images = sorted(rel for rel in [t.rel for t in plan.transfers] + plan.skips
                    if Path(rel).suffix.lower() in IMAGE_EXT)
    if not images:
        raise DatasetError(f"dataset {name!r} has no images in {storage.url}")
    return images


def check_local_dataset(image_dir: Path) -> list[str]:
    """Raise DatasetError unless ``image_dir`` holds images that all have a non-empty caption."""
    images = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXT) if image_dir.is_dir() else []
    if not images:
        raise DatasetError(f"no images in {image_dir}")
    uncaptioned = []
    for name in images:
        caption = image_dir / Path(name).with_suffix(CAPTION_SUFFIX)
        if not caption.is_file() or not caption.read_text("utf-8", "replace").strip():
            uncaptioned.append(name)
    if uncaptioned:
        raise DatasetError(f"{len(uncaptioned)} image(s) have no caption (.txt): {', '.join(uncaptioned[:5])}")
    return images
