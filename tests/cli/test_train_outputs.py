"""`train status --follow` (the live bar), `train logs` and `train samples` through the entry
point, on a local bucket holding what a trainer leaves: status, log, samples (and a hostile
"sample" that is not an image)."""

from __future__ import annotations

import io
import json
import time

from PIL import Image

from comfy_lora_cloud.models import Run, RunState
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.training.status import StatusReporter


def png(color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, "PNG")
    return out.getvalue()


def seed(home, state: RunState = RunState.DONE):
    bucket = LocalStorage(home / "bucket")
    rep = StatusReporter(bucket, "run-a", min_interval=0)
    rep.update(force=True, state=state, step=100, total_steps=100, loss=0.3812, lora="loras/cat.safetensors")
    bucket.write_bytes("runs/run-a/logs/trainer.log",
                       b"".join(f"steps: {i}% avr_loss=0.4\n".encode() for i in range(1, 6)) + b"\x1b[2Jwiped\r\n")
    bucket.write_bytes("runs/run-a/samples/cat_e000002.png", png((200, 0, 0)))
    bucket.write_bytes("runs/run-a/samples/evil.png", b"<html><script>alert(1)</script></html>")
    now = time.time()
    StateStore(home / "state.db").put_run(Run(id="run-a", dataset="cat", preset="character", lora_name="cat",
                                              state=state, dph=0.5, created_at=now - 3600, updated_at=now))
    return bucket


def test_follow_draws_a_bar_with_step_loss_and_spend(cli, clean_env):
    seed(clean_env)
    proc = cli("train", "status", "run-a", "--follow", "--interval", "0.05", TTY_COMPATIBLE="1", FORCE_COLOR="1")
    assert "100/100" in proc.stderr and "loss 0.3812" in proc.stderr and "$0.50 so far" in proc.stderr
    assert "next: lora-cloud lora download cat" in proc.stdout
    plain = cli("train", "status", "run-a", "--follow", "--interval", "0.05")  # no terminal: lines, no bar
    assert "━" not in plain.stderr and "run-a" in plain.stdout and "$0.50 so far" in plain.stdout


def test_follow_of_a_failed_run_exits_7(cli, clean_env):
    seed(clean_env, RunState.FAILED)
    proc = cli("--json", "train", "status", "run-a", "--follow", "--interval", "0.05", check=7)
    last = json.loads(proc.stdout[proc.stdout.rindex("\n{\n") + 1:])  # the final status, after the events
    assert last["state"] == "failed" and last["run_id"] == "run-a"


def test_logs_are_the_tail_cleaned_of_escapes(cli, clean_env):
    seed(clean_env)
    out = cli("train", "logs", "run-a", "--tail", "2").stdout
    assert out.splitlines() == ["steps: 5% avr_loss=0.4", "?[2Jwiped"]
    data = cli.json("train", "logs", "run-a", "--tail", "0")
    assert data["total_lines"] == 6 and len(data["lines"]) == 6


def test_samples_download_only_images_once(cli, clean_env, tmp_path):
    seed(clean_env)
    proc = cli("train", "samples", "run-a", "--out", str(tmp_path / "s"))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["cat_e000002.png"]
    assert "left out" in proc.stderr or "not an image" in proc.stderr  # the hostile file is reported, not saved
    again = cli.json("train", "samples", "run-a", "--out", str(tmp_path / "s"))
    assert again["downloaded"] == [] and again["samples"] == ["cat_e000002.png"]
