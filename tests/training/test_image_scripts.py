"""The trainer image's thin scripts, run as plain Python against a local bucket."""

from __future__ import annotations

import os
import subprocess
import sys

from comfy_lora_cloud.storage.local import LocalStorage
from tests.training.trainer_helpers import REPO, seed_bucket

SCRIPTS = REPO / "trainer_image"


def _run(script: str, *args: str, storage: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORA_CLOUD_STORAGE": storage}
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_prepare_then_validate_dataset(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    seed_bucket(storage, images=4)
    r = _run("prepare_dataset.py", "cat", str(tmp_path / "ds"), storage=storage.url)
    assert r.returncode == 0, r.stderr
    assert "4 images ready" in r.stdout
    assert sorted(p.name for p in (tmp_path / "ds").iterdir())[:2] == ["00.png", "00.txt"]
    r = _run("validate_dataset.py", str(tmp_path / "ds"))
    assert r.returncode == 0 and "OK: 4 captioned images" in r.stdout
    (tmp_path / "ds" / "02.txt").unlink()
    r = _run("validate_dataset.py", str(tmp_path / "ds"))
    assert r.returncode == 1 and "1 image(s) have no caption" in r.stderr and "02.png" in r.stderr


def test_sync_up_and_down(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    src = tmp_path / "out"
    (src / "sample").mkdir(parents=True)
    (src / "a.safetensors").write_bytes(b"lora")
    (src / "sample" / "s.png").write_bytes(b"png")
    r = _run("sync_gcs.py", "up", str(src), "runs/x/output", storage=storage.url)
    assert r.returncode == 0 and "2 files copied" in r.stdout, r.stderr
    assert storage.read_bytes("runs/x/output/sample/s.png") == b"png"
    r = _run("sync_gcs.py", "down", "runs/x/output", str(tmp_path / "back"), storage=storage.url)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back" / "a.safetensors").read_bytes() == b"lora"


def test_train_lora_fails_cleanly_without_a_run(tmp_path):
    r = _run("train_lora.py", "--workdir", str(tmp_path / "w"), storage=str(tmp_path / "b"))
    assert r.returncode == 2 and "LORA_CLOUD_RUN_ID" in r.stderr


def test_dockerfile_pins_what_the_configs_were_validated_against():
    text = (SCRIPTS / "Dockerfile").read_text()
    assert "SD_SCRIPTS_COMMIT=48d368fa557731ad0488c07304dfeba8c07910eb" in text
    assert "torch==2.6.0 torchvision==0.21.0" in text and "cu124" in text
    assert "USER 1000:1000" in text and '"/opt/lora-cloud[trainer]"' in text
    assert "/opt/tokenizers/openai_clip-vit-large-patch14" in text and "/opt/tokenizers/google_t5-v1_1-xxl" in text
