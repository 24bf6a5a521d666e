"""Build what kohya's ``flux_train_network.py`` reads: the training TOML, the dataset TOML, the
sample-prompt file and the command line.

kohya flattens the training TOML's tables, so the sections written here are only
for people reading the file. The dataset TOML is strict (voluptuous), so only dataset/subset keys
go there. Paths default to the trainer image's layout under ``/workspace``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import tomli_w

from .presets import Preset, StepPlan

# Base weights: the file names kohya is given, the bucket's models/ cache and the HF source.
MODEL_FILES: dict[str, tuple[str, str]] = {
    # kohya option -> (file name, Hugging Face repo)
    "pretrained_model_name_or_path": ("flux1-dev.safetensors", "black-forest-labs/FLUX.1-dev"),
    "ae": ("ae.safetensors", "black-forest-labs/FLUX.1-dev"),
    "clip_l": ("clip_l.safetensors", "comfyanonymous/flux_text_encoders"),
    "t5xxl": ("t5xxl_fp16.safetensors", "comfyanonymous/flux_text_encoders"),
}
GATED_REPOS = ("black-forest-labs/FLUX.1-dev",)

# Cosmetic grouping of training keys into TOML tables; anything unlisted lands in [training].
_SECTION_OF = {
    "model": ("pretrained_model_name_or_path", "ae", "clip_l", "t5xxl", "model_type", "tokenizer_cache_dir"),
    "network": ("network_module", "network_dim", "network_alpha", "network_args", "network_train_unet_only",
                "network_weights", "network_dropout"),
    "flux": ("guidance_scale", "timestep_sampling", "discrete_flow_shift", "model_prediction_type",
             "sigmoid_scale", "t5xxl_max_token_length", "apply_t5_attn_mask", "weighting_scheme"),
    "memory": ("mixed_precision", "save_precision", "full_bf16", "fp8_base", "fp8_base_unet", "sdpa", "xformers",
               "gradient_checkpointing", "cpu_offload_checkpointing", "blocks_to_swap", "cache_latents",
               "cache_latents_to_disk", "cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
               "highvram", "lowram", "vae_batch_size", "text_encoder_batch_size"),
    "optimizer": ("optimizer_type", "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr",
                  "lr_scheduler", "lr_warmup_steps", "lr_scheduler_args", "max_grad_norm"),
    "saving": ("output_dir", "output_name", "save_model_as", "save_every_n_epochs", "save_every_n_steps",
               "save_state", "save_last_n_epochs_state", "save_last_n_epochs", "save_last_n_steps",
               "save_last_n_steps_state", "resume", "initial_epoch", "training_comment", "metadata_trigger_phrase",
               "metadata_title"),
    "sampling": ("sample_prompts", "sample_every_n_epochs", "sample_every_n_steps", "sample_at_first"),
}
_SECTION_BY_KEY = {k: s for s, keys in _SECTION_OF.items() for k in keys}


def join(base: str, *parts: str) -> str:
    """Join paths in the flavour of ``base``: POSIX for the image's ``/workspace/...`` (also
    when ``train plan`` runs on Windows), native for a local folder."""
    if base.startswith("/"):
        return str(PurePosixPath(base, *parts))
    return str(Path(base, *parts))


@dataclass(frozen=True)
class TrainPaths:
    """Where things are on the machine that trains (defaults: the trainer image)."""

    root: str = "/workspace"
    kohya_dir: str = "/opt/sd-scripts"
    # CLIP-L and T5 tokenizers baked into the image; else kohya fetches them from the Hub at start
    tokenizer_dir: str | None = "/opt/tokenizers"

    def _p(self, *parts: str) -> str:
        return join(self.root, *parts)

    @property
    def models_dir(self) -> str:
        return self._p("models")

    @property
    def image_dir(self) -> str:
        return self._p("dataset")

    @property
    def output_dir(self) -> str:
        return self._p("output")

    @property
    def config_dir(self) -> str:
        return self._p("config")

    def model_path(self, option: str) -> str:
        return join(self.models_dir, MODEL_FILES[option][0])


@dataclass
class TrainJob:
    """Everything the builder needs: a resolved preset, its step plan and the run's names."""

    preset: Preset
    plan: StepPlan
    output_name: str
    trigger: str = ""
    run_id: str = ""
    paths: TrainPaths = field(default_factory=TrainPaths)
    sample_prompts: list[str] | None = None  # None: the preset's


@dataclass(frozen=True)
class ConfigFiles:
    train_toml: Path
    dataset_toml: Path
    prompts: Path | None
    command: list[str]


def sample_prompt_lines(job: TrainJob) -> list[str]:
    """One kohya prompt line per prompt: ``text --w W --h H --s S --g G --d SEED``."""
    p = job.preset.plan
    prompts = job.sample_prompts if job.sample_prompts is not None else list(p.get("sample_prompts", []))
    size, steps, guidance, seed = p.get("sample_size", 1024), p.get("sample_steps", 20), \
        p.get("sample_guidance", 3.5), p.get("sample_seed", 42)
    lines = []
    for text in prompts:
        text = " ".join(text.replace("{trigger}", job.trigger).split()).strip(" ,")
        if text:
            lines.append(f"{text} --w {size} --h {size} --s {steps} --g {guidance} --d {seed}")
    return lines


def training_config(job: TrainJob, config_dir: str | None = None) -> dict[str, Any]:
    """kohya's training TOML as a dict of tables."""
    cfg_dir = config_dir or job.paths.config_dir
    flat: dict[str, Any] = {opt: job.paths.model_path(opt) for opt in MODEL_FILES}
    if job.paths.tokenizer_dir:
        flat["tokenizer_cache_dir"] = job.paths.tokenizer_dir
    flat.update(job.preset.training)
    flat.pop("max_train_steps", None)  # the plan turned it into epochs; kohya: epochs win anyway
    flat.update(
        output_dir=job.paths.output_dir,
        output_name=job.output_name,
        dataset_config=join(cfg_dir, "dataset.toml"),
        max_train_epochs=job.plan.epochs,
    )
    if job.trigger:
        flat["metadata_trigger_phrase"] = job.trigger
    if job.run_id:
        flat["training_comment"] = f"lora-cloud run {job.run_id}, preset {job.preset.name}, tier {job.preset.tier} GB"
    if sample_prompt_lines(job):
        flat["sample_prompts"] = join(cfg_dir, "prompts.txt")
    else:  # kohya crashes at the first sample without a prompt file
        for key in ("sample_every_n_epochs", "sample_every_n_steps", "sample_at_first"):
            flat.pop(key, None)
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        out.setdefault(_SECTION_BY_KEY.get(key, "training"), {})[key] = value
    return out


def dataset_config(job: TrainJob) -> dict[str, Any]:
    """kohya's dataset TOML: one dataset, one subset (the dataset folder)."""
    subset = {"image_dir": job.paths.image_dir, **job.preset.subset, "num_repeats": job.plan.repeats}
    if job.trigger:
        subset.setdefault("class_tokens", job.trigger)  # only used for images without a caption file
    return {"datasets": [{**job.preset.dataset, "subsets": [subset]}]}


def kohya_command(
    train_toml: str | Path,
    paths: TrainPaths = TrainPaths(),
    *,
    launcher: Sequence[str] | None = None,
    resume: str | Path | None = None,
    initial_epoch: int | None = None,
) -> list[str]:
    """The command line. ``launcher`` replaces ``accelerate launch ... flux_train_network.py``
    (tests put a stand-in there); the arguments after it are the same either way.

    Resume passes ``--initial_epoch`` next to ``--resume``: kohya then starts at that epoch's
    first batch and ignores the step count in ``train_state.json``, which is relative after an
    earlier resume, and ``skip_until_initial_step`` is never used.
    """
    if launcher is None:
        launcher = ["accelerate", "launch", "--num_cpu_threads_per_process", "1", "--mixed_precision", "bf16",
                    join(paths.kohya_dir, "flux_train_network.py")]
    cmd = [*launcher, "--config_file", str(train_toml)]
    if resume is not None:
        cmd += ["--resume", str(resume)]
        if initial_epoch is not None:
            cmd += ["--initial_epoch", str(initial_epoch)]
    return cmd


def write_configs(job: TrainJob, out_dir: str | Path, *, config_dir: str | None = None,
                  launcher: Sequence[str] | None = None) -> ConfigFiles:
    """Write ``train.toml``, ``dataset.toml`` and ``prompts.txt`` into ``out_dir``.

    ``config_dir`` is where the files will be when kohya reads them (default: ``out_dir``);
    ``lora-cloud train plan`` writes locally what the image will read from ``/workspace/config``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_dir = config_dir or str(out)
    train, dataset = out / "train.toml", out / "dataset.toml"
    train.write_text(tomli_w.dumps(training_config(job, cfg_dir)), "utf-8")
    dataset.write_text(tomli_w.dumps(dataset_config(job)), "utf-8")
    prompts = None
    lines = sample_prompt_lines(job)
    if lines:
        prompts = out / "prompts.txt"
        prompts.write_text("\n".join(lines) + "\n", "utf-8")
    cmd = kohya_command(join(cfg_dir, "train.toml"), job.paths, launcher=launcher)
    return ConfigFiles(train, dataset, prompts, cmd)


def format_command(cmd: Sequence[str]) -> str:
    return shlex.join(cmd)
