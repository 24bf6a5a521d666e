"""`lora-cloud train plan` and `train status` at the edge (CliRunner), against a local bucket."""

from __future__ import annotations

import json
import tomllib

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.cli.main import app
from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.status import StatusReporter
from tests.training.trainer_helpers import seed_bucket


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path / "bucket")
    seed_bucket(storage, images=12)
    monkeypatch.setenv("LORA_CLOUD_STORAGE", storage.url)
    return storage


def _invoke(*args):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_plan_counts_the_bucket_dataset_and_writes_configs(bucket, tmp_path):
    out = tmp_path / "plan"
    r = _invoke("--json", "train", "plan", "--dataset", "cat", "--type", "character", "--gpu", "h100",
                "--trigger", "ohwx cat", "--set", "learning_rate=3e-4", "--set", "dataset.resolution=768", "--out",
                str(out))
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["tier_gb"] == 80 and data["plan"]["images"] == 12 and data["plan"]["batch_size"] == 2
    assert data["estimate"]["gpu"] == "H100 SXM" and data["estimate"]["usd"] > 0 and data["estimate"]["hours"] > 0
    train = {k: v for t in tomllib.loads((out / "train.toml").read_text()).values() for k, v in t.items()}
    assert train["learning_rate"] == 3e-4 and train["max_train_epochs"] == data["plan"]["epochs"]
    assert train["dataset_config"] == "/workspace/config/dataset.toml"
    dataset = tomllib.loads((out / "dataset.toml").read_text())["datasets"][0]
    assert dataset["resolution"] == 768 and dataset["subsets"][0]["num_repeats"] == data["plan"]["repeats"]
    assert "ohwx cat" in (out / "prompts.txt").read_text()
    spec = json.loads((out / "spec.json").read_text())
    assert spec["overrides"] == {"learning_rate": 3e-4, "dataset.resolution": 768} and spec["vram_gb"] == 80
    assert data["command"].endswith("--config_file /workspace/config/train.toml")


def test_plan_without_dataset_needs_images(bucket, tmp_path):
    r = _invoke("train", "plan", "--dataset", "nope", "--out", str(tmp_path / "p"))
    assert r.exit_code == 2 and "--images" in r.output
    r = _invoke("train", "plan", "--dataset", "nope", "--images", "40", "--type", "style", "--out", str(tmp_path / "p"))
    assert r.exit_code == 0, r.output
    assert "style LoRA, 24 GB tier: 40 images" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--gpu", "tpu-v5"], "unknown GPU"),
    (["--type", "anime"], "unknown LoRA type"),
    (["--vram", "12"], "too little"),
    (["--set", "resolution=\"big\""], "expected int"),
    (["--set", "novalue"], "key=value"),
])
def test_plan_refuses_bad_input(bucket, tmp_path, args, message):
    r = _invoke("train", "plan", "--dataset", "cat", "--out", str(tmp_path / "p"), *args)
    assert r.exit_code == 2 and message in r.output


def test_status_lists_runs_and_shows_one(bucket):
    rep = StatusReporter(bucket, "run-a", min_interval=0)
    rep.update(state=RunState.TRAINING, step=120, total_steps=1200, loss=0.4123, eta_seconds=900)
    StatusReporter(bucket, "run-b", min_interval=0).update(state=RunState.FAILED, error="kohya failed (exit 1): OOM")
    r = _invoke("train", "status")
    assert r.exit_code == 0
    assert "run-a" in r.stdout and "step 120/1200 loss 0.412 eta 15 min" in r.stdout and "run-b" in r.stdout
    r = _invoke("--json", "train", "status", "run-b")
    data = json.loads(r.stdout)
    assert data["status"]["state"] == "failed" and [e["state"] for e in data["events"]] == ["failed"]
    r = _invoke("train", "status", "run-b")
    assert "error: kohya failed (exit 1): OOM" in r.stdout
    r = _invoke("train", "status", "nope")
    assert r.exit_code == 3 and "no status" in r.output


def test_status_follow_prints_events_until_the_run_ends(bucket):
    import threading

    rep = StatusReporter(bucket, "run-f", min_interval=0)
    rep.update(state=RunState.TRAINING, step=1, total_steps=10)
    finish = threading.Timer(0.3, lambda: rep.update(state=RunState.DONE, step=10, lora="loras/cat.safetensors"))
    finish.start()
    try:
        r = _invoke("train", "status", "run-f", "--follow", "--interval", "0.05")
    finally:
        finish.join()
    assert r.exit_code == 0
    assert "state state=training" in r.stdout and "state state=done" in r.stdout
    lines = [line for line in r.stdout.rstrip().splitlines() if not line.startswith("next: ")]
    assert lines[-1].split()[:2] == ["run-f", "done"]
    assert "next: lora-cloud lora download cat" in r.stdout  # what to do with a finished run


def test_status_of_every_run_comes_a_page_at_a_time(bucket):
    for i in range(3):
        StatusReporter(bucket, f"cat-2026010{i + 1}-120000-abcd", min_interval=0).update(state=RunState.DONE)
    r = _invoke("train", "status", "--limit", "2")
    assert r.exit_code == 0
    assert "cat-20260103" in r.stdout and "cat-20260102" in r.stdout and "cat-20260101" not in r.stdout
    assert "showing 1-2 of 3 runs; next page: --offset 2" in r.stderr
    r = _invoke("--json", "train", "status", "--offset", "2")
    assert [row["run_id"] for row in json.loads(r.stdout)] == ["cat-20260101-120000-abcd"]
