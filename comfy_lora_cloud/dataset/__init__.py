"""Dataset preparation: small pure steps and a pipeline that composes them.

    load.py        any image file -> RGB, or an ImageLoadError for that file alone
    crop.py        where to crop per LoRA type: face (character), salient object (concept), none (style)
    background.py  rembg background removal from a local model file
    bucket.py      kohya's aspect-ratio buckets: the exact size each image is written at
    caption.py     Florence-2 / BLIP-2 captions and the trigger-word rules
    dedupe.py      perceptual-hash near-duplicates
    validate.py    the dataset report (errors, warnings; JSON and text)
    pipeline.py    all of the above over a folder, in parallel, writing dataset.json

Folder in, folder out: moving datasets to and from storage is the service's (one upload, one
download, in ``service/library/datasets.py``; ``service/library/prepare.py`` puts the pipeline between them).
The ComfyUI nodes, the CLI and the trainer image all call these. Importing this package is
cheap: OpenCV, dlib, rembg, torch and transformers are imported inside the functions that use them.
"""

from __future__ import annotations

from .bucket import BucketConfig
from .pipeline import PrepareOptions, PrepareResult, prepare_dataset
from .validate import ValidationReport, validate_folder

__all__ = [
    "BucketConfig", "PrepareOptions", "PrepareResult", "ValidationReport",
    "prepare_dataset", "validate_folder",
]
