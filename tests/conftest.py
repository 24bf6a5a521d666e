"""Every test gets a clean environment: its own LORA_CLOUD_HOME under tmp_path, no LORA_CLOUD_*
variables or keys from the developer's shell, and no emulator/vast URL leaking in."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.fixtures.gcs_emulator", "tests.fixtures.sshd"]

# COMFYUI_PATH: a developer's own ComfyUI would otherwise receive the tests' LoRA downloads
_LEAKY = ("VAST_API_KEY", "HF_TOKEN", "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "VAST_URL",
          "COMFYUI_PATH")


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("LORA_CLOUD_") or key in _LEAKY:
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "lora-cloud-home"
    monkeypatch.setenv("LORA_CLOUD_HOME", str(home))
    # no desktop notification pops up on a developer's screen while tests run (tests/service/
    # test_notify.py turns it on where it checks it)
    monkeypatch.setenv("LORA_CLOUD_NOTIFY_DESKTOP", "false")
    return home
