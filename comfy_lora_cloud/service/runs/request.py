"""What a user asks a run to be (:class:`TrainRequest`), checked before anything is read or rented.

The CLI's ``train start`` and the Launch node build one directly; the sidebar's JSON body is parsed
into one at the edge (``comfy/routes/runs.py``). :func:`~.start.start_run` takes it typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from ...models import check_number, validate_name
from ...settings import MAX_DPH, MAX_RUN_HOURS, MAX_RUN_USD, MIN_HOURS

LORA_TYPES = ("character", "style", "concept")


@dataclass
class TrainRequest:
    """What a user asks for. Everything else (steps, tier, offer) is derived."""

    dataset: str
    lora_type: str = "character"
    lora_name: str | None = None  # default: the dataset name
    trigger: str | None = None  # default: the dataset's
    gpu: str | None = None  # a GPU model (4090, a100...) or None for the offer picker
    vram_gb: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    provider: str = "vast"
    interruptible: bool = False
    max_run_usd: float | None = None  # default: the settings' budget
    max_dph: float | None = None
    max_hours: float | None = None
    reuse_finished: bool = False  # a DONE run with the same config counts (ComfyUI re-queues)
    # preemption recovery for this run (None: the settings'); see service/runs/recovery.py
    resume_wait_minutes: float | None = None
    max_attempts: int | None = None
    on_demand_after: int | None = None

    def checked(self) -> "TrainRequest":
        """Names, choices and numbers valid, or a clear ConfigError before anything is read or
        rented: every number in range before any arithmetic (the CLI's flags, the Launch node's
        inputs and a body alike; a 401-digit ``--max-attempts`` must not reach ``float()``)."""
        for name, (low, high) in REQUEST_RANGES.items():
            value = getattr(self, name)
            if value is None or (name in _ZERO_IS_DEFAULT and value == 0 and not isinstance(value, bool)):
                continue
            setattr(self, name, check_number(name, value, low, high, integer=name in _WHOLE))
        if not isinstance(self.interruptible, bool):
            raise ConfigError("interruptible must be true or false")
        if not isinstance(self.overrides, dict):
            raise ConfigError("overrides must be an object")
        self.dataset = validate_name(self.dataset, "dataset name")  # NFC: the name the bucket uses
        if self.lora_name is not None:
            self.lora_name = validate_name(self.lora_name, "LoRA name")
        if self.lora_type not in LORA_TYPES:
            raise ConfigError(f"lora_type must be one of {', '.join(LORA_TYPES)}, not {self.lora_type!r}")
        if self.provider not in ("vast", "local"):
            raise ConfigError(f"provider must be vast or local, not {self.provider!r}")
        return self


# what each number of a request may be (low, high); max_hours is at least a minute (MIN_HOURS)
REQUEST_RANGES: dict[str, tuple[float, float]] = {
    "vram_gb": (1.0, 1024.0), "max_run_usd": (0.0, MAX_RUN_USD), "max_dph": (0.0, MAX_DPH),
    "max_hours": (MIN_HOURS, MAX_RUN_HOURS), "resume_wait_minutes": (0.0, 24 * 60.0), "max_attempts": (1, 50),
    "on_demand_after": (0, 50),
}
_WHOLE = ("max_attempts", "on_demand_after")
_ZERO_IS_DEFAULT = ("max_hours",)  # 0 hours: the settings' max_run_hours (start_run's ``or``)
