"""The run spec: what a training run is, written by the controller to ``runs/<id>/spec.json``
(or passed whole in ``LORA_CLOUD_RUN_SPEC``) and read by the trainer.

It holds no secret: tokens and keys reach the trainer as environment variables only. A rented
host can write ``spec.json`` (its key writes the run's folder), so it is read within bounds
(:func:`~..jsonsafe.loads`) and every number is range-checked before a reader does arithmetic
with it: a spec 50,000 levels deep or with a 400-digit number is a :class:`CorruptRecord`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .. import jsonsafe
from ..errors import ConfigError, CorruptRecord, ObjectNotFound
from ..models import check_number, validate_name
from ..storage.base import Storage, parse_json_record
from ..storage.layout import run_key
from .presets import PRESET_TYPES

SPEC = "spec.json"
# the ranges a spec's numbers may take: (low, high), low exclusive; beyond them a typo or a payload
NUMBER_RANGES = {"vram_gb": (0.0, 1024.0), "max_hours": (0.0, 24.0 * 31), "status_interval": (0.0, 3600.0),
                 "log_interval": (0.0, 86400.0)}


@dataclass
class RunSpec:
    run_id: str
    dataset: str
    lora_type: str
    lora_name: str
    trigger: str = ""
    vram_gb: float = 24.0
    overrides: dict[str, Any] = field(default_factory=dict)
    max_hours: float = 6.0
    sample_prompts: list[str] | None = None
    cache_weights: bool = True  # upload Hugging Face downloads to the bucket's models/ for the next run
    status_interval: float = 10.0  # seconds between status.json writes (state changes write at once)
    log_interval: float = 60.0  # seconds between log uploads

    def __post_init__(self) -> None:
        validate_name(self.run_id, "run id")
        validate_name(self.dataset, "dataset name")
        validate_name(self.lora_name, "LoRA name")
        if self.lora_type not in PRESET_TYPES:
            raise ConfigError(f"unknown LoRA type {self.lora_type!r}; choose one of {', '.join(PRESET_TYPES)}")
        for name, (low, high) in NUMBER_RANGES.items():
            setattr(self, name, float(check_number(name, getattr(self, name), low, high, above=True)))
        if not isinstance(self.overrides, dict):
            raise ConfigError("overrides must be an object")
        if not isinstance(self.trigger, str):
            raise ConfigError("trigger must be text")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunSpec":
        if not isinstance(data, Mapping):
            raise ConfigError(f"invalid run spec: a JSON {type(data).__name__}, not an object")
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ConfigError(f"invalid run spec: {exc}") from None

    def save(self, storage: Storage) -> None:
        storage.write_bytes(run_key(self.run_id, SPEC), json.dumps(self.to_dict(), indent=1).encode(),
                            content_type="application/json")


def load_spec(storage: Storage, env: Mapping[str, str] | None = None, run_id: str | None = None) -> RunSpec:
    """``LORA_CLOUD_RUN_SPEC`` (JSON) wins; else ``runs/<LORA_CLOUD_RUN_ID>/spec.json``."""
    env = os.environ if env is None else env
    raw = env.get("LORA_CLOUD_RUN_SPEC")
    if raw:
        try:
            return RunSpec.from_dict(jsonsafe.loads(raw))
        except ValueError as exc:
            raise ConfigError(f"LORA_CLOUD_RUN_SPEC is not valid JSON: {exc}") from None
    run_id = run_id or env.get("LORA_CLOUD_RUN_ID")
    if not run_id:
        raise ConfigError("no run: set LORA_CLOUD_RUN_ID (spec in the bucket) or LORA_CLOUD_RUN_SPEC")
    key = run_key(run_id, SPEC)
    try:
        data = parse_json_record(storage.read_bytes(key), key)
    except ObjectNotFound:
        raise ConfigError(f"run {run_id} has no spec.json in the bucket") from None
    try:
        return RunSpec.from_dict(data)
    except ConfigError as exc:
        raise CorruptRecord(f"{key} is not a valid run spec: {exc.message}", run_id=run_id) from None
