"""The run spec: what a training run is, written by the controller to ``runs/<id>/spec.json``
(or passed whole in ``LORA_CLOUD_RUN_SPEC``) and read by the trainer.

It holds no secret: tokens and keys reach the trainer as environment variables only. A rented
host can write ``spec.json`` (its key writes the run's folder), so it is read within bounds
(:func:`~..jsonsafe.loads`) and every number is range-checked before a reader does arithmetic
with it: a spec 50,000 levels deep or with a 400-digit number is a :class:`CorruptRecord`.

The spec also records the limits the run was launched under (:class:`RunLimits`: max $/hr, $ per
run, hours), so a home that did not launch it holds it to those, not to its own settings
(``service/guard/watchdog.py``). Being host-writable, they are read back through :func:`read_limits`,
range-checked, and never looser than the hard maxima of ``settings/model.py``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from .. import jsonsafe
from ..errors import ConfigError, CorruptRecord, ObjectNotFound
from ..models import check_number, validate_name
from ..settings import MAX_DPH, MAX_RUN_HOURS, MAX_RUN_USD, MIN_HOURS
from ..storage.base import Storage, parse_json_record, read_record_bytes
from ..storage.layout import run_key
from .presets import PRESET_TYPES

SPEC = "spec.json"
# the ranges a spec's numbers may take: (low, high), low exclusive; beyond them a typo or a payload
NUMBER_RANGES = {"vram_gb": (0.0, 1024.0), "max_hours": (0.0, 24.0 * 31), "status_interval": (0.0, 3600.0),
                 "log_interval": (0.0, 86400.0)}

MAX_SPEC_BYTES = 256 * 1024  # a spec is a few KB; the guard reads no more to learn a run's limits
# what a recorded limit may be (low, high): a $ limit of 0 is "off", which reads as the hard maximum
LIMIT_RANGES = {"max_dph": (0.0, MAX_DPH), "max_run_usd": (0.0, MAX_RUN_USD), "max_hours": (MIN_HOURS, MAX_RUN_HOURS)}


@dataclass(frozen=True)
class RunLimits:
    """The limits a run was launched under. A $ limit of 0 (off where it was launched) is held
    to the hard maximum instead: no record, whoever wrote it, makes a run limitless."""

    max_dph: float
    max_run_usd: float
    max_hours: float

    def __post_init__(self) -> None:
        for name, (low, high) in LIMIT_RANGES.items():
            value = float(check_number(f"limit {name}", getattr(self, name), low, high))
            object.__setattr__(self, name, value or high)

    @classmethod
    def parse(cls, data: Any) -> "RunLimits":
        """Limits from a record (ConfigError for anything but the three numbers, each in range)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"limits must be an object, not a JSON {type(data).__name__}")
        missing = sorted(set(LIMIT_RANGES) - set(data))
        if missing:
            raise ConfigError(f"limits lack {', '.join(missing)}")
        return cls(**{name: data[name] for name in LIMIT_RANGES})

    @classmethod
    def hard_maxima(cls) -> "RunLimits":
        """What a run is held to where no limit of its own can be read: the most any may have."""
        return cls(MAX_DPH, MAX_RUN_USD, MAX_RUN_HOURS)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


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
    limits: dict[str, float] | None = None  # RunLimits.to_dict(): what the run was launched under

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
        if self.limits is not None:
            self.limits = RunLimits.parse(self.limits).to_dict()

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


def read_limits(storage: Storage, run_id: str) -> RunLimits | None:
    """The limits run ``run_id`` was launched under, from its ``spec.json`` (blocking); None when
    it has no spec or its spec records none (launched by an older version).

    Raises :class:`CorruptRecord` for a spec or limits that cannot be believed (not JSON, too
    big, a limit that is not a number in range), :class:`StorageError` when the bucket cannot be
    read."""
    key = run_key(run_id, SPEC)
    try:
        data = parse_json_record(read_record_bytes(storage, key, MAX_SPEC_BYTES), key)
    except ObjectNotFound:
        return None
    if not isinstance(data, Mapping):
        raise CorruptRecord(f"{key} is a JSON {type(data).__name__}, not a run spec", run_id=run_id)
    if data.get("limits") is None:
        return None
    try:
        return RunLimits.parse(data["limits"])
    except ConfigError as exc:
        raise CorruptRecord(f"the limits in {key} cannot be believed: {exc.message}", run_id=run_id) from None
