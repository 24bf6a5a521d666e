"""Training configs as people edit them: the three presets, a form's values checked with the CLI's
rules, the expected time and dollars, and a past run's resolved config (for comparing runs).

The one home of "the config editor's fields": :func:`editor_overrides` turns the form (rank,
learning rate, steps, resolution) into the preset overrides ``lora-cloud train start --set``
takes, checked field by field with :data:`~comfy_lora_cloud.training.presets.LIMITS` and then by
:func:`~comfy_lora_cloud.training.presets.load_preset` (types), the same rules as the CLI; the
quick launch body's ``config`` goes through it too
(:func:`comfy_lora_cloud.comfy.routes.runs.train_request`, at the edge). The
estimate is :func:`~comfy_lora_cloud.training.estimate.estimate`, as ``lora-cloud train plan``
prints it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Mapping, TYPE_CHECKING

from ...errors import ConfigError, CorruptRecord, LoraCloudError, ObjectNotFound
from ...models import check_trigger, is_number, validate_name
from ...storage.base import parse_json_record, read_record_bytes
from ...storage.layout import run_key
from ...training.estimate import DEFAULT_IMAGES, TYPICAL_DPH, estimate, resolve_gpu
from ...training.presets import LIMITS, PRESET_TYPES, check_override_range, load_preset, plan_steps

from .views import ConfigCheck, EditorPresets, EditorValues, FieldError, PresetDefaults, RunConfig

if TYPE_CHECKING:
    from ..core import Core
    from ..library import Library

FIELDS = ("rank", "learning_rate", "steps", "resolution")
DEFAULT_GPU = "RTX 4090"
MAX_SPEC_BYTES = 256 * 1024


def _number(field: str, value: Any, *, integer: bool) -> float | int:
    if not is_number(value):  # a bool, NaN, inf, or an integer past 2**53 (float() of it may raise)
        raise ConfigError(f"{field} must be a number")
    if integer:
        if float(value) != int(value):
            raise ConfigError(f"{field} must be a whole number")
        return int(value)
    return float(value)


def editor_overrides(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """``(overrides, errors)`` for the editor's fields; each error names its field."""
    overrides: dict[str, Any] = {}
    errors: list[FieldError] = []
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        errors.append(FieldError(unknown[0], f"unknown field {unknown[0]!r}; known: {', '.join(FIELDS)}"))
    plan = (("rank", "network_dim", True), ("learning_rate", "learning_rate", False),
            ("steps", "max_train_steps", True), ("resolution", "dataset.resolution", True))
    for field, key, integer in plan:
        value = values.get(field)
        if value is None or value == "":
            continue
        try:
            number = _number(field, value, integer=integer)
            check_override_range(field, key.rpartition(".")[2], number)
        except ConfigError as exc:
            errors.append(FieldError(field, exc.message.replace("override ", "")))
            continue
        overrides[key] = number
        if field == "rank":
            overrides["network_alpha"] = float(number)  # alpha = rank, as every preset has it
    return overrides, errors



def _editor_values(preset: Any, plan: Any) -> EditorValues:
    return EditorValues(rank=preset.training.get("network_dim"), learning_rate=preset.training.get("learning_rate"),
                        steps=plan.total_steps, resolution=preset.dataset.get("resolution"))


class TrainConfigs:
    """The config editor's service (``app.train_config``)."""

    def __init__(self, core: Core, library: Library):
        self.core = core
        self.library = library

    async def presets(self) -> EditorPresets:
        """The three presets with their defaults for a typical dataset of their type."""
        def run() -> EditorPresets:
            out = []
            for name in PRESET_TYPES:
                preset = load_preset(name, 24)
                plan = plan_steps(preset, DEFAULT_IMAGES[name])
                out.append(PresetDefaults(name, preset.description, DEFAULT_IMAGES[name], _editor_values(preset, plan)))
            return EditorPresets(
                presets=tuple(out), fields=FIELDS, gpus=tuple(sorted(TYPICAL_DPH, key=TYPICAL_DPH.__getitem__)),
                default_gpu=DEFAULT_GPU,
                limits={f: LIMITS[k] for f, k in (("rank", "network_dim"), ("learning_rate", "learning_rate"),
                                                   ("steps", "max_train_steps"), ("resolution", "resolution"))})

        return await asyncio.to_thread(run)

    async def check(self, body: Mapping[str, Any]) -> ConfigCheck:
        """Check an edited config and estimate it (:class:`~.views.ConfigCheck`). A dataset that
        is there sets the image count (and the default trigger); a GPU name prices it."""
        if not isinstance(body, Mapping):
            raise ConfigError("the request body must be a JSON object")
        lora_type = body.get("lora_type", "character")
        if lora_type not in PRESET_TYPES:
            raise ConfigError(f"lora_type must be one of {', '.join(PRESET_TYPES)}")
        values = body.get("config") or {}
        if not isinstance(values, Mapping):
            raise ConfigError("config must be an object")
        overrides, errors = editor_overrides(values)
        try:
            trigger = check_trigger(body.get("trigger"))
        except ConfigError as exc:
            errors.append(FieldError("trigger", exc.message))
            trigger = None
        gpu = body.get("gpu") or DEFAULT_GPU
        try:
            gpu_name, _vram = resolve_gpu(gpu) if isinstance(gpu, str) else resolve_gpu("")
        except ConfigError as exc:
            errors.append(FieldError("gpu", exc.message))
            gpu_name = DEFAULT_GPU
        dataset = body.get("dataset") or None
        images, dataset_trigger = DEFAULT_IMAGES[lora_type], None
        if dataset is not None:
            try:
                validate_name(dataset, "dataset name")
                info = await self.library.describe(dataset)
                images, dataset_trigger = info.images or images, info.trigger
            except (ConfigError, ObjectNotFound) as exc:
                errors.append(FieldError("dataset", exc.message))

        def run() -> ConfigCheck:
            defaults_preset = load_preset(lora_type, 24)
            defaults = _editor_values(defaults_preset, plan_steps(defaults_preset, images))
            out = ConfigCheck(ok=not errors, errors=tuple(errors), lora_type=lora_type, images=images,
                              defaults=defaults, overrides=overrides,
                              trigger=trigger if trigger is not None else dataset_trigger, gpu=gpu_name)
            if errors:
                return out
            try:
                preset = load_preset(lora_type, 24, overrides)  # the CLI's type checks
                plan = plan_steps(preset, images)
                est = estimate(preset, plan, gpu_name)
            except LoraCloudError as exc:
                return dataclasses.replace(out, ok=False, errors=(FieldError("", exc.message),))
            return dataclasses.replace(out, values=_editor_values(preset, plan), plan=plan, estimate=est)

        return await asyncio.to_thread(run)

    async def run_config(self, run_id: str) -> RunConfig:
        """A run's config, resolved the way the trainer resolves it (preset + tier + overrides),
        flat (:class:`~.views.RunConfig`); for comparing runs side by side."""
        validate_name(run_id, "run id")

        def run() -> RunConfig:
            record = self.core.state.get_run(run_id)
            spec: dict[str, Any] | None = record.spec if record is not None and record.spec else None
            if spec is None:
                key = run_key(run_id, "spec.json")
                try:  # a rented host can write it: parsed within bounds, its problem shown (never a 5xx)
                    spec = parse_json_record(read_record_bytes(self.core.storage, key, MAX_SPEC_BYTES), key)
                except ObjectNotFound:
                    raise ObjectNotFound(f"run {run_id!r} has no spec.json") from None
                except CorruptRecord as exc:
                    return RunConfig(run_id, {"problem": exc.message[:300]})
            if not isinstance(spec, dict):
                return RunConfig(run_id, {"problem": f"the spec.json of run {run_id} is not a JSON object"})
            overrides = spec.get("overrides") if isinstance(spec.get("overrides"), dict) else {}
            config: dict[str, Any] = {"lora_type": spec.get("lora_type"), "dataset": spec.get("dataset"),
                                      "trigger": spec.get("trigger"), "vram_gb": spec.get("vram_gb")}
            try:
                preset = load_preset(str(spec.get("lora_type")), float(spec.get("vram_gb") or 24), overrides)
            except (LoraCloudError, TypeError, ValueError, ArithmeticError, RecursionError) as exc:
                config["problem"] = getattr(exc, "message", str(exc))[:300]
                return RunConfig(run_id, config)
            for section in ("training", "dataset", "subset"):
                for key, value in getattr(preset, section).items():
                    if isinstance(value, (str, int, float, bool)) or value is None:
                        config[key if section == "training" else f"{section}.{key}"] = value
            config["overridden"] = sorted(str(k) for k in overrides)
            return RunConfig(run_id, config)

        return await asyncio.to_thread(run)
