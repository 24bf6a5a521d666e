"""Flux LoRA training with kohya sd-scripts: presets, config builder, progress parser, the status
protocol and the entrypoint the trainer image runs (no ComfyUI, no GPU needed to import)."""
