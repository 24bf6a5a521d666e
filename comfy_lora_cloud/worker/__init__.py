"""What runs on the rented GPU, never on the controller: the trainer entrypoint, kohya process
supervision, the dataset pull, base weights, checkpoints, publishing the LoRA and the instance's
self-destroy. It shares presets, the kohya config and the status protocol with the controller
through :mod:`comfy_lora_cloud.training`."""
