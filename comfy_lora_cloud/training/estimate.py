"""Rough time and cost of a run before anything is rented (``lora-cloud train plan``).

Time comes from the offer picker's model (``providers.pricing``: its throughput table with
sources, weights download, fixed start-up), priced on a typical offer for the GPU, plus the
sample images kohya renders. The $/hr figures below are typical vast.ai on-demand prices
(inferred, late 2026), a placeholder for the live offer ``lora-cloud offers`` finds; pass
``dph`` to price a known offer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..models import Offer
from ..providers import pricing
from .presets import Preset, StepPlan

TYPICAL_DPH = {  # $/hr, inferred typical vast.ai on-demand prices; the live offer replaces them
    "RTX 3090": 0.22, "RTX 4090": 0.40, "RTX 5090": 0.70, "RTX A5000": 0.25, "L4": 0.35, "RTX A6000": 0.50,
    "A40": 0.45, "L40S": 0.85, "RTX 6000Ada": 0.80, "A100 PCIE": 0.80, "A100 SXM4": 1.10, "H100 PCIE": 1.80,
    "H100 SXM": 2.20, "H200": 3.00, "RTX 4060 Ti": 0.15,
}
DEFAULT_IMAGES = {"character": 20, "style": 100, "concept": 40}  # typical dataset sizes
SAMPLE_SECONDS = 40.0  # 20-60 s per 1024^2 sample image


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("nvidia", "").replace("geforce", ""))


def resolve_gpu(name: str) -> tuple[str, float]:
    """``a100``/``4090``/``RTX 4090`` -> (the throughput table's name, its GB). An ambiguous
    short name picks the largest, then fastest card (``a100`` -> A100 SXM4 80 GB)."""
    gpus = pricing.throughput_table()["gpus"]
    key = _norm(name)
    exact = [g for g in gpus if _norm(g) == key]
    found = exact or [g for g in gpus if key and key in _norm(g)]
    if not found:
        raise ConfigError(f"unknown GPU {name!r}; known: {', '.join(gpus)}")
    best = max(found, key=lambda g: (gpus[g]["vram_gb"], -float(gpus[g]["s_per_step"].get("1024", 99))))
    return best, float(gpus[best]["vram_gb"])


@dataclass(frozen=True)
class Estimate:
    gpu: str
    total_steps: int
    sec_per_step: float
    samples: int
    hours: float
    dph: float
    usd: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def estimate(preset: Preset, plan: StepPlan, gpu: str, dph: float | None = None) -> Estimate:
    """Hours and dollars of ``plan`` on ``gpu`` (a throughput-table name)."""
    res = preset.dataset.get("resolution", 1024)
    side = int(res if isinstance(res, int) else max(res))
    gpus = pricing.throughput_table()["gpus"]
    price = TYPICAL_DPH.get(gpu, 1.0) if dph is None else dph
    offer = Offer(id="typical", gpu_name=gpu, gpu_ram_gb=float(gpus[gpu]["vram_gb"]), dph_total=price,
                  inet_down_mbps=500.0, reliability=1.0)
    batch1_steps = plan.total_steps * plan.batch_size  # the table's s/step are for batch 1
    job = pricing.Job(preset=preset.name, resolution=side, steps=batch1_steps, tier=preset.tier)
    est = pricing.estimate(offer, job)
    if est is None:
        raise ConfigError(f"no throughput figure for {gpu} at {side} px")
    every = preset.training.get("sample_every_n_epochs")
    samples = len(preset.plan.get("sample_prompts", [])) * (plan.epochs // every) if every else 0
    seconds = est.pull_s + est.run_s + samples * SAMPLE_SECONDS * (side / 1024) ** 2
    hours = seconds / 3600
    return Estimate(gpu=gpu, total_steps=plan.total_steps, sec_per_step=round(est.train_s / plan.total_steps, 2),
                    samples=samples, hours=round(hours, 2), dph=price, usd=round(hours * price, 2))


def preset_steps(preset: str, images: int | None = None, tier: int = 24) -> int:
    """Batch-1 steps the preset plans for ``images`` (default: a typical dataset for it), which
    is what the offer picker's seconds-per-step table is measured in."""
    from .presets import load_preset, plan_steps

    if preset not in DEFAULT_IMAGES:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(DEFAULT_IMAGES)}")
    plan = plan_steps(load_preset(preset, tier), images or DEFAULT_IMAGES[preset])
    return plan.total_steps * plan.batch_size


def interruptible_overrides(lora_type: str, tier: int, overrides: dict, images: int, *, minutes: float,
                            gpu_name: str | None = None) -> dict[str, int]:
    """Overrides that keep one epoch (one checkpoint) of an interruptible run within ``minutes`` of
    training, so that a preemption loses no more (kohya resumes whole epochs only: a mid-epoch
    resume hits its step-counter bug).

    Sized on the slowest GPU the run may rent: ``gpu_name`` when the user chose one, else the
    slowest the throughput table knows for the tier, so the bound holds on whatever GPU a recovery
    moves the run to. Fewer steps per epoch mean more epochs: samples are then rendered as often
    as the preset's plan would (not once per short epoch). The user's own ``num_repeats`` or
    ``epoch_steps`` win (nothing is changed)."""
    from .presets import load_preset, plan_steps

    if any(k.rpartition(".")[2] in ("num_repeats", "epoch_steps", "max_train_epochs") for k in overrides):
        return {}
    preset = load_preset(lora_type, tier, overrides)
    res = preset.dataset.get("resolution", 1024)
    side = int(res if isinstance(res, int) else max(res))
    batch = int(preset.dataset.get("batch_size", 1))
    table = pricing.throughput_table()["gpus"]
    gpus = [gpu_name] if gpu_name else [g for g, v in table.items() if v["vram_gb"] >= pricing.TIER_VRAM_GB[tier]]
    speeds = [s for s in (pricing.seconds_per_step(g, side) for g in gpus) if s]
    if not speeds:
        return {}
    steps = max(1, int(minutes * 60 // (max(speeds) * batch)))  # batched steps in one epoch
    plan = plan_steps(preset, images)
    if plan.steps_per_epoch <= steps:
        return {}
    out = {"subset.num_repeats": max(1, steps * batch // images)}
    every = preset.training.get("sample_every_n_epochs")
    if every and not any(k.rpartition(".")[2] == "sample_every_n_epochs" for k in overrides):
        short = plan_steps(load_preset(lora_type, tier, {**overrides, **out}), images)
        out["sample_every_n_epochs"] = max(1, round(int(every) * short.epochs / plan.epochs))
    return out
