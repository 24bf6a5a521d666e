"""``lora-cloud dataset prepare``: a folder (or a stored dataset) through the preparation
pipeline and into storage.

The pipeline (:mod:`comfy_lora_cloud.dataset.pipeline`) only turns a folder into a folder; the
transfers on either side are the library's one download and one upload, so a prepared dataset
is written like every other (manifest last, one writer at a time, replace or refuse).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...dataset.pipeline import PrepareOptions, PrepareResult, Progress, prepare_dataset
from ...errors import DatasetError, DatasetExists, ObjectNotFound
from ...models import validate_name
from ...storage import Storage, layout
from .dataset_use import require_unused
from .datasets import download_dataset, upload_dataset


def prepare_to_storage(storage: Storage, source: str, name: str, options: PrepareOptions, *,
                       replace_existing: bool = False, force: bool = False, progress: Progress | None = None,
                       workdir: str | None = None) -> PrepareResult:
    """``source`` is a folder, or the name of a stored dataset; the result goes to
    ``datasets/<name>/`` (an existing one only with ``replace_existing``).

    Checked before any work: the source exists (a path that is not there, or a file, is named as
    such, not as a bad dataset name) and the name is free or ``replace_existing`` was given, and
    no live run trains on the dataset it would replace (:class:`DatasetInUse`) unless ``force``.
    The prepared folder is validated; when the report has errors (images without captions, no
    readable image) nothing is uploaded and :class:`DatasetError` says what to fix."""
    name = validate_name(name, "dataset name")
    src = Path(source).expanduser()
    stored = not src.is_dir()
    if stored:
        if src.exists():
            raise DatasetError(f"{source} is a file: give a folder of photos, or the name of a dataset in storage")
        if _looks_like_path(source):
            raise DatasetError(f"no folder {source}: give a folder of photos, or the name of a dataset in storage")
        if not storage.list(layout.dataset_prefix(validate_name(source, "dataset name"))).objects:
            raise ObjectNotFound(f"no dataset named {source!r} in {storage.url}, and no folder {source} here")
    exists = bool(storage.list(layout.dataset_prefix(name)).objects)
    if exists and not replace_existing:
        raise DatasetExists(f"dataset {name!r} already exists in {storage.url}: pass --replace to make it exactly "
                            "the prepared images, or choose another --name")
    if exists and not force:  # before the (long) preparation; the upload asks again at the end
        require_unused(storage, name, change="replace")
    with tempfile.TemporaryDirectory(prefix="lora-cloud-prepare-", dir=workdir) as tmp:
        if stored:
            src = Path(tmp) / "source"
            download_dataset(storage, source, src)
        result = prepare_dataset(src, Path(tmp) / "out", options, name=name, progress=progress)
        if result.images == 0:
            raise DatasetError("no image could be prepared: " + "; ".join(s["error"] for s in result.skipped[:5]))
        if not result.report.ok:
            raise DatasetError(f"the prepared dataset did not pass validation, so nothing was uploaded: "
                               f"{'; '.join(result.report.errors)}{_fix_for(result.report, options)}")
        upload_dataset(storage, result.out_dir, name, replace=replace_existing, force=force,
                       progress=(lambda e: progress("upload", e.files_done, e.files_total)) if progress else None,
                       remedy="pass --replace to make it exactly the prepared images, or choose another --name")
        return replace(result, out_dir=None)  # the temporary folder is gone; the data is in storage


def _looks_like_path(source: str) -> bool:
    return any(sep in source for sep in ("/", "\\")) or source.startswith((".", "~"))


def _fix_for(report: Any, options: PrepareOptions) -> str:
    if report.missing_captions and options.caption == "none":
        return (". Fix: put a .txt caption next to each photo, pass --trigger WORD (it becomes the caption), or "
                "caption them with --caption florence --caption-model DIR")
    return ""
