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

from ..dataset.pipeline import PrepareOptions, PrepareResult, Progress, prepare_dataset
from ..errors import DatasetError
from ..storage import Storage
from .library import download_dataset, upload_dataset


def prepare_to_storage(storage: Storage, source: str, name: str, options: PrepareOptions, *,
                       replace_existing: bool = False, progress: Progress | None = None,
                       workdir: str | None = None) -> PrepareResult:
    """``source`` is a folder, or the name of a stored dataset; the result goes to
    ``datasets/<name>/`` (an existing one only with ``replace_existing``)."""
    with tempfile.TemporaryDirectory(prefix="lora-cloud-prepare-", dir=workdir) as tmp:
        src = Path(source)
        if not src.is_dir():
            src = Path(tmp) / "source"
            download_dataset(storage, source, src)
        result = prepare_dataset(src, Path(tmp) / "out", options, name=name, progress=progress)
        if result.images == 0:
            raise DatasetError("no image could be prepared: " + "; ".join(s["error"] for s in result.skipped[:5]))
        upload_dataset(storage, result.out_dir, name, replace=replace_existing,
                       progress=(lambda e: progress("upload", e.files_done, e.files_total)) if progress else None,
                       remedy="pass --replace to make it exactly the prepared images, or choose another --name")
        return replace(result, out_dir=None)  # the temporary folder is gone; the data is in storage
