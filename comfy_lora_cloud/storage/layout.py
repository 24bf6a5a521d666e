"""Where things live in the bucket (design.md, "The bucket is the source of truth").

    datasets/<name>/            images, one .txt caption per image, dataset.json (manifest)
    loras/<name>.safetensors    + loras/<name>.json (run, preset, dataset, trigger, samples)
    models/                     cached base weights (flux, clip_l, t5xxl, ae)
    workflows/                  workflow templates
    runs/<run_id>/              spec.json, status.json, events.jsonl, logs/, samples/, checkpoints/
"""

from __future__ import annotations

from ..models import validate_name

DATASETS = "datasets/"
LORAS = "loras/"
MODELS = "models/"
WORKFLOWS = "workflows/"
RUNS = "runs/"
MANIFEST = "dataset.json"


def dataset_prefix(name: str) -> str:
    return f"{DATASETS}{validate_name(name, 'dataset name')}/"


def lora_key(name: str) -> str:
    return f"{LORAS}{validate_name(name, 'LoRA name')}.safetensors"


def lora_meta_key(name: str) -> str:
    return f"{LORAS}{validate_name(name, 'LoRA name')}.json"


def model_key(filename: str) -> str:
    """A cached base-weights file (flux, clip_l, t5xxl, ae) in the bucket's ``models/``."""
    return f"{MODELS}{filename}"


def run_prefix(run_id: str) -> str:
    return f"{RUNS}{validate_name(run_id, 'run id')}/"


def run_key(run_id: str, name: str) -> str:
    return run_prefix(run_id) + name
