"""Training presets: ``presets/common.toml`` + one file per LoRA type + a VRAM tier + overrides.

The TOML files in ``presets/`` are the one source of truth (the trainer image installs this
package and reads them from here). Resolution order, later wins::

    common.toml  ->  <type>.toml  ->  common [tier.N]  ->  <type> [tier.N]  ->  user overrides

Overrides are flat ``{"learning_rate": 3e-4, "dataset.resolution": 512}``: a bare key goes to
the section that already has it (training when none does), ``section.key`` names it. kohya
never type-checks its TOML, so an override whose type differs from the preset
value is refused here instead of failing hours later on a paid GPU.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

from ..errors import ConfigError
from ..models import MAX_EXACT_INT, is_number, shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_TYPES = ("character", "style", "concept")
TIERS = (24, 48, 80)
SECTIONS = ("training", "dataset", "subset", "plan", "prep")


@dataclass
class Preset:
    """A fully resolved preset: what goes into kohya's two TOML files plus our planning knobs."""

    name: str
    tier: int
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    subset: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    prep: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tier": self.tier, "description": self.description,
                **{s: dict(self.section(s)) for s in SECTIONS}}


def _read(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("presets").joinpath(f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def pick_tier(vram_gb: float) -> int:
    """The largest tier that fits ``vram_gb`` (a 40 GB A100 gets the 48 tier, whose settings
    fit 40 GB; a 16 GB card is refused: it needs a slower swap-heavy recipe we do not ship)."""
    if vram_gb >= 80 - 1:  # cards report 79.x GB
        return 80
    if vram_gb >= 40 - 1:
        return 48
    if vram_gb >= 24 - 1:
        return 24
    raise ConfigError(f"{vram_gb:g} GB of GPU memory is too little for Flux LoRA training (need 24 GB)")


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for section in SECTIONS:
        into.setdefault(section, {}).update(layer.get(section, {}))


def _coerce(key: str, old: Any, new: Any) -> Any:
    """Keep TOML types what kohya expects: int->float is fine, anything else must match."""
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, int):
        return float(new)
    elif isinstance(old, int) and isinstance(new, float) and new.is_integer():
        return int(new)
    elif type(old) is type(new):
        return new
    raise ConfigError(f"override {key}: expected {type(old).__name__}, got {type(new).__name__} ({new!r})")


# Keys an override may add that no preset sets: kohya options that matter for a Flux LoRA
# (network and optimizer arguments kohya reads for Flux). Anything else is refused, so a typo
# such as ``lerning_rate`` fails here instead of being written into kohya's TOML and silently ignored.
EXTRA_KEYS: dict[str, frozenset[str]] = {
    "training": frozenset({
        "network_dropout", "network_args", "network_weights", "dim_from_weights", "training_comment",
        "sigmoid_scale", "t5xxl_max_token_length", "apply_t5_attn_mask", "weighting_scheme", "loss_type",
        "full_bf16", "fp8_base_unet", "cpu_offload_checkpointing", "blocks_to_swap", "highvram", "lowram",
        "vae_batch_size", "text_encoder_batch_size", "skip_cache_check", "disable_mmap_load_safetensors",
        "optimizer_args", "unet_lr", "text_encoder_lr", "max_train_steps", "max_train_epochs", "lr_scheduler_num_cycles",
        "lr_scheduler_power", "save_every_n_steps", "save_last_n_steps", "save_last_n_steps_state",
        "sample_every_n_steps", "sample_at_first", "min_snr_gamma", "noise_offset", "huber_c",
    }),
    "dataset": frozenset({"validation_split", "validation_seed", "network_multiplier"}),
    "subset": frozenset({
        "num_repeats", "class_tokens", "caption_separator", "keep_tokens_separator", "caption_prefix",
        "caption_suffix", "color_aug", "random_crop", "face_crop_aug_range", "alpha_mask", "resize_interpolation",
    }),
    "plan": frozenset(),
    "prep": frozenset(),
}

def known_keys(resolved: Mapping[str, Mapping[str, Any]], section: str) -> set[str]:
    """What ``section`` may hold after overrides: the preset's own keys and the kohya extras."""
    return set(resolved.get(section, {})) | set(EXTRA_KEYS.get(section, ()))


def _unknown(raw_key: str, key: str, resolved: Mapping[str, Mapping[str, Any]], sections: tuple[str, ...]) -> ConfigError:
    import difflib

    pool = sorted({k for s in sections for k in known_keys(resolved, s)})
    close = difflib.get_close_matches(key, pool, n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        " (see docs/training-guide.md for the settings a run takes)"
    return ConfigError(f"unknown setting {raw_key!r}{hint}")


def apply_overrides(resolved: dict[str, dict[str, Any]], overrides: Mapping[str, Any]) -> None:
    """Apply flat ``key`` / ``section.key`` overrides in place (``None`` removes a key).

    A key must be one the preset has or a known kohya option (:data:`EXTRA_KEYS`), with a value
    of the preset's type in a sane range (:data:`LIMITS`); anything else is a ConfigError that
    names the closest known key."""
    for raw_key, value in overrides.items():
        section, _, key = raw_key.rpartition(".")
        if section and section not in SECTIONS:
            raise ConfigError(f"override {raw_key!r}: unknown section {section!r} (use one of {', '.join(SECTIONS)})")
        if not section:
            section = next((s for s in SECTIONS if key in resolved[s]), "") or \
                next((s for s in SECTIONS if key in EXTRA_KEYS[s]), "")
            if not section:
                raise _unknown(raw_key, key, resolved, SECTIONS)
        elif key not in known_keys(resolved, section):
            raise _unknown(raw_key, key, resolved, (section,))
        target = resolved[section]
        if value is None:
            target.pop(key, None)
        else:  # the range first: _coerce's float() of a 401-digit integer would raise OverflowError
            value = check_override_range(raw_key, key, value)
            target[key] = check_override_range(raw_key, key, _coerce(raw_key, target.get(key), value))


# The ranges that make sense for the values people change (the CLI's --set and the sidebar's
# config editor alike): beyond them a typo, not a plan, and an hour of rented GPU lost to it.
LIMITS: dict[str, tuple[float, float]] = {
    "network_dim": (1, 512),
    "network_alpha": (0.0, 1024.0),
    "learning_rate": (1e-7, 1e-2),
    "max_train_steps": (1, 100_000),
    "max_train_epochs": (1, 1000),
    "resolution": (256, 2048),
    "num_repeats": (1, 1000),
    # and the other numbers a run takes (`--set`): wide, they catch a sign or an exponent gone wrong
    "unet_lr": (1e-7, 1e-2), "network_dropout": (0.0, 1.0), "lr_warmup_steps": (0.0, 100_000),
    "max_grad_norm": (0.0, 1e6), "seed": (0, 2**32 - 1), "blocks_to_swap": (0, 35), "guidance_scale": (0.0, 100.0),
    "discrete_flow_shift": (0.01, 100.0), "sample_every_n_epochs": (1, 1000), "save_every_n_epochs": (1, 1000),
    "batch_size": (1, 64), "min_bucket_reso": (64, 4096), "max_bucket_reso": (64, 8192),
    "bucket_reso_steps": (64, 1024), "keep_tokens": (0, 1000), "noise_offset": (0.0, 1.0),
    "min_snr_gamma": (0.0, 100.0), "steps_per_image": (1, 10_000), "min_steps": (1, 100_000),
    "max_steps": (1, 100_000), "epoch_steps": (1, 100_000),
}


def check_override_range(raw_key: str, key: str, value: Any) -> Any:
    """The one range check of an override's number (``--set``, the sidebar's config editor): a
    key of :data:`LIMITS` within its range, any other within what a float holds exactly."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if not is_number(value):  # NaN, inf, or an integer beyond 2**53 (never converted to float here)
        raise ConfigError(f"override {raw_key}: {shown(value)} is not a finite number in range")
    low, high = LIMITS.get(key, (-MAX_EXACT_INT, MAX_EXACT_INT))
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"override {raw_key}: {value!r} is outside {low:g}..{high:g}")
    if key == "resolution" and value % 64:
        raise ConfigError(f"override {raw_key}: {value!r} is not a multiple of 64 (Flux's buckets need that)")
    return value


def load_preset(name: str, vram_gb: float = 24, overrides: Mapping[str, Any] | None = None) -> Preset:
    """Resolve preset ``name`` for a GPU with ``vram_gb`` of memory, then apply ``overrides``."""
    if name not in PRESET_TYPES:
        raise ConfigError(f"unknown LoRA type {name!r}; choose one of {', '.join(PRESET_TYPES)}")
    tier = pick_tier(vram_gb)
    common, own = _read("common"), _read(name)
    resolved: dict[str, dict[str, Any]] = {}
    for layer in (common, own, common.get("tier", {}).get(str(tier), {}), own.get("tier", {}).get(str(tier), {})):
        _merge(resolved, copy.deepcopy(layer))
    user = dict(overrides or {})
    apply_overrides(resolved, user)
    _swap_blocks_if_needed(resolved, user)
    return Preset(name=name, tier=tier, description=own.get("description", ""), **resolved)


def _swap_blocks_if_needed(resolved: dict[str, dict[str, Any]], user: Mapping[str, Any]) -> None:
    """24 GB tier: block swap only when the rank is large, and never when the
    user chose ``blocks_to_swap`` or ``cpu_offload_checkpointing`` (kohya asserts they exclude
    each other)."""
    plan, training = resolved["plan"], resolved["training"]
    threshold = plan.get("swap_blocks_from_rank")
    if threshold is None or "blocks_to_swap" in training or training.get("cpu_offload_checkpointing"):
        return
    if any(k.rpartition(".")[2] == "blocks_to_swap" for k in user):
        return
    if int(training.get("network_dim", 0)) >= int(threshold):
        training["blocks_to_swap"] = int(plan.get("swap_blocks", 8))


@dataclass(frozen=True)
class StepPlan:
    """How long a run is: kohya trains whole epochs, we checkpoint once per epoch."""

    images: int
    repeats: int
    batch_size: int
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def to_dict(self) -> dict[str, int]:
        return {"images": self.images, "repeats": self.repeats, "batch_size": self.batch_size,
                "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs, "total_steps": self.total_steps}


def plan_steps(preset: Preset, images: int) -> StepPlan:
    """Steps from the image count: ``steps_per_image × images`` clamped to [min, max] (counted at
    batch 1, divided by the batch size: a batch-2 step sees two images), then repeats so that one
    epoch is about ``epoch_steps`` and as many whole epochs as reach the target.

    ``max_train_steps``/``num_repeats`` overrides win over the plan.
    """
    if images <= 0:
        raise ConfigError("the dataset has no images")
    p = preset.plan
    batch = int(preset.dataset.get("batch_size", 1))
    target = min(max(int(p["steps_per_image"]) * images, int(p["min_steps"])), int(p["max_steps"]))
    target = int(preset.training.get("max_train_steps", target))
    target = max(1, math.ceil(target / batch))
    repeats = preset.subset.get("num_repeats")
    if repeats is None:
        repeats = max(1, round(int(p["epoch_steps"]) * batch / images))
    steps_per_epoch = math.ceil(images * int(repeats) / batch)
    epochs = max(1, round(target / steps_per_epoch))
    if "max_train_epochs" in preset.training:
        epochs = int(preset.training["max_train_epochs"])
    return StepPlan(images=images, repeats=int(repeats), batch_size=batch, steps_per_epoch=steps_per_epoch,
                    epochs=epochs)
