"""Checks before money: is this dataset fit to train, before a GPU is rented for it.

The one home of that question. :func:`~.runs.start_run` calls :func:`require_ready` before it
records or rents anything, so ``lora-cloud train start``, the Launch node and the sidebar's quick
launch refuse the same datasets with the same reasons; ``train plan`` shows the same report
without refusing.

What is checked, on the bytes in the bucket (downloaded through the library's one download):

* every image decodes whole (:func:`~comfy_lora_cloud.dataset.validate.validate_folder`);
* every image kohya will train on has a non-empty ``.txt`` caption (the trainer refuses a
  dataset without, after the GPU is already paid for: ``worker/dataset_pull.py``);
* kohya reads the images at all (``.gif``/``.tif`` are left out by sd-scripts);
* warnings: a character LoRA without a trigger word, a trigger missing from captions, too few
  images for the type, near-duplicates, awkward aspect ratios.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import DatasetError
from ...storage import Storage
from ...storage.layout import KOHYA_IMAGE_SUFFIXES
from ..library import Transfers

#: how many reasons a refusal lists before "and N more"
SHOWN = 8


@dataclass
class Readiness:
    """What :func:`check_dataset` found: errors refuse a run, warnings are shown."""

    dataset: str
    images: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_dataset(storage: Storage, name: str, *, lora_type: str, trigger: str | None,
                  workdir: str | Path | None = None, transfers: Transfers | None = None) -> Readiness:
    """Download ``datasets/<name>/`` into a temporary folder (through ``transfers``: the app's
    offload; default this process) and judge it for a ``lora_type`` run with ``trigger`` (None or
    empty: no trigger word)."""
    from ...dataset.validate import validate_folder
    from ..library import IN_PROCESS, download_dataset

    out = Readiness(dataset=name)
    with tempfile.TemporaryDirectory(prefix="lora-cloud-preflight-", dir=workdir) as tmp:
        download_dataset(storage, name, tmp, require_complete=True, transfers=transfers or IN_PROCESS)
        report = validate_folder(Path(tmp), trigger=trigger or None, lora_type=lora_type)
    out.images = report.count
    out.errors.extend(report.errors)
    trained = [i.name for i in report.images if PurePosixPath(i.name).suffix.lower() in KOHYA_IMAGE_SUFFIXES]
    ignored = sorted(i.name for i in report.images if i.name not in set(trained))
    if report.images and not trained:
        out.errors.append(f"none of the images is a type kohya trains on ({', '.join(sorted(KOHYA_IMAGE_SUFFIXES))})"
                          f": convert them, e.g. with lora-cloud dataset prepare")
    elif ignored:
        out.warnings.append(f"{len(ignored)} image(s) of a type kohya does not read are left out: "
                            + ", ".join(ignored[:SHOWN]))
    if lora_type == "character" and not trigger:
        out.warnings.append("a character LoRA without a trigger word: the identity is learnt into every prompt's "
                            "subject; pass --trigger WORD (a rare token such as 'ohwx') and put it in the captions")
    out.warnings.extend(report.warnings)
    return out


def require_ready(storage: Storage, name: str, *, lora_type: str, trigger: str | None,
                  workdir: str | Path | None = None, transfers: Transfers | None = None) -> Readiness:
    """:func:`check_dataset`, raising :class:`DatasetError` with every reason when the dataset
    would fail on the rented GPU. Returns the readiness (its warnings) otherwise."""
    ready = check_dataset(storage, name, lora_type=lora_type, trigger=trigger, workdir=workdir, transfers=transfers)
    if not ready.ok:
        shown = "; ".join(ready.errors[:SHOWN]) + (f"; and {len(ready.errors) - SHOWN} more"
                                                    if len(ready.errors) > SHOWN else "")
        raise DatasetError(f"dataset {name!r} cannot be trained, so nothing was rented: {shown}. Fix the files and "
                           f"upload again (lora-cloud dataset upload FOLDER --name {name!r} --replace), or check it "
                           f"with: lora-cloud dataset validate {name!r}")
    return ready
