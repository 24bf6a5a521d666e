"""Where things live in the bucket (design.md, "The bucket is the source of truth").

    datasets/<name>/            images, one .txt caption per image, dataset.json (manifest)
    loras/<name>.safetensors    + loras/<name>.json (run, preset, dataset, trigger, samples)
    models/                     cached base weights (flux, clip_l, t5xxl, ae)
    workflows/                  workflow templates
    runs/<run_id>/              spec.json, status.json, events.jsonl, logs/, samples/, checkpoints/
    sessions/<session_id>/      status.json: the remote ComfyUI's heartbeat (training/inference.py)
    outputs/<session_id>/       every image a remote ComfyUI saved, + <file>.json (its workflow)

The names of what a dataset folder holds live here too (the manifest, caption and image
suffixes), so the dataset steps, the service and the trainer agree on them: ``dataset/`` and
``training/`` may import ``storage/``, and ``service/`` imports both.

A dataset is complete once its manifest exists: every writer writes it last, and removes it
first before changing a dataset that has one. While an upload runs, ``datasets/<name>/`` also
holds :data:`DATASET_LOCK`, the upload's lease (see :mod:`~.lock`).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ..models import validate_name

DATASETS = "datasets/"
LORAS = "loras/"
MODELS = "models/"
WORKFLOWS = "workflows/"
RUNS = "runs/"
SESSIONS = "sessions/"
OUTPUTS = "outputs/"
TOP_LEVEL = (DATASETS, LORAS, MODELS, WORKFLOWS, RUNS, SESSIONS, OUTPUTS)

MANIFEST = "dataset.json"
DATASET_LOCK = ".lora-cloud-lock.json"
CAPTION_SUFFIX = ".txt"
#: image files a dataset may hold (what the loader opens; ``dataset/load.py`` maps each to the
#: Pillow formats it must really contain)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
#: the subset kohya's sd-scripts trains on (``library/train_util.py:IMAGE_EXTENSIONS``)
KOHYA_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
LORA_SUFFIX = ".safetensors"


def is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def is_dataset_file(rel: str) -> bool:
    """What travels with a dataset: images, captions and the manifest; no hidden files (our lock,
    .DS_Store), no notes or sidecars of other tools."""
    name = rel.rsplit("/", 1)[-1]
    if name.startswith("."):
        return False
    suffix = PurePosixPath(name).suffix.lower()
    return name == MANIFEST or suffix == CAPTION_SUFFIX or suffix in IMAGE_SUFFIXES


def dataset_prefix(name: str) -> str:
    return f"{DATASETS}{validate_name(name, 'dataset name')}/"


def dataset_lock_key(name: str) -> str:
    return dataset_prefix(name) + DATASET_LOCK


def lora_key(name: str) -> str:
    return f"{LORAS}{validate_name(name, 'LoRA name')}{LORA_SUFFIX}"


def lora_meta_key(name: str) -> str:
    return f"{LORAS}{validate_name(name, 'LoRA name')}.json"


def lora_file_name(name: str) -> str:
    """The one name a LoRA's file has on disk, wherever it is downloaded to."""
    return f"{validate_name(name, 'LoRA name')}{LORA_SUFFIX}"


def model_key(filename: str) -> str:
    """A cached base-weights file (flux, clip_l, t5xxl, ae) in the bucket's ``models/``."""
    return f"{MODELS}{filename}"


def run_prefix(run_id: str) -> str:
    return f"{RUNS}{validate_name(run_id, 'run id')}/"


def run_key(run_id: str, name: str) -> str:
    return run_prefix(run_id) + name


def session_prefix(session_id: str) -> str:
    return f"{SESSIONS}{validate_name(session_id, 'session id')}/"


def session_key(session_id: str, name: str) -> str:
    return session_prefix(session_id) + name


def output_prefix(session_id: str) -> str:
    return f"{OUTPUTS}{validate_name(session_id, 'session id')}/"
