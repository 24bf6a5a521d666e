"""Opt-in: every preset x tier through sd-scripts' own parser and validators.

Needs a checkout of kohya-ss/sd-scripts at the pinned commit (KOHYA_DIR), a Python with its
requirements (KOHYA_PYTHON, default this one) and shared/tools/kohya-validate.py
(KOHYA_VALIDATE, default ../shared/tools/kohya-validate.py next to the repo). ~10-20 s per case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_lora_cloud.training.kohya_config import MODEL_FILES, TrainJob, TrainPaths, write_configs
from comfy_lora_cloud.training.presets import PRESET_TYPES, TIERS, load_preset, plan_steps

KOHYA_DIR = os.environ.get("KOHYA_DIR")
REPO = Path(__file__).resolve().parents[2]
VALIDATOR = Path(os.environ.get("KOHYA_VALIDATE", REPO.parent / "shared" / "tools" / "kohya-validate.py"))

pytestmark = pytest.mark.skipif(not KOHYA_DIR, reason="opt-in: set KOHYA_DIR to an sd-scripts checkout")


def _workspace(root: Path, images: int) -> TrainPaths:
    from PIL import Image

    (root / "tokenizers").mkdir(parents=True)  # kohya fills an empty cache dir from the Hub on first use
    paths = TrainPaths(root=str(root), kohya_dir=KOHYA_DIR or "", tokenizer_dir=str(root / "tokenizers"))
    img = Path(paths.image_dir)
    img.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (768 + 64 * (i % 4), 1024), (i * 9 % 255, 90, 160)).save(img / f"{i:03d}.png")
        (img / f"{i:03d}.txt").write_text(f"ohwx, photo {i}")
    Path(paths.models_dir).mkdir(parents=True)
    for filename, _ in MODEL_FILES.values():
        (Path(paths.models_dir) / filename).touch()
    return paths


def _validate(train: Path, dataset: Path, *extra: str) -> subprocess.CompletedProcess:
    py = os.environ.get("KOHYA_PYTHON", sys.executable)
    cmd = [py, str(VALIDATOR), str(train), str(dataset), "--check-paths", *(["--", *extra] if extra else [])]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "KOHYA_DIR": KOHYA_DIR or ""},
                          timeout=300)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("name", PRESET_TYPES)
def test_preset_tier_passes_kohya_validate(tmp_path, name, tier):
    paths = _workspace(tmp_path / "ws", images=6)
    preset = load_preset(name, tier)
    job = TrainJob(preset=preset, plan=plan_steps(preset, 6), output_name="lora", trigger="ohwx", run_id="v",
                   paths=paths)
    files = write_configs(job, paths.config_dir)
    r = _validate(files.train_toml, files.dataset_toml)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "OK", r.stdout + r.stderr


def test_resume_arguments_pass_kohya_parser(tmp_path):
    paths = _workspace(tmp_path / "ws", images=4)
    preset = load_preset("character", 24)
    files = write_configs(TrainJob(preset=preset, plan=plan_steps(preset, 4), output_name="lora", paths=paths),
                          paths.config_dir)
    state = Path(paths.output_dir) / "lora-000002-state"
    state.mkdir(parents=True)
    r = _validate(files.train_toml, files.dataset_toml, "--resume", str(state), "--initial_epoch", "3")
    assert r.returncode == 0, r.stdout + r.stderr
