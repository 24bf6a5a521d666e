"""`lora-cloud train start/stop` end to end on the local provider: the real entrypoint runs as the
"instance", with fake kohya, against a local bucket."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.cli.main import app
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.status import read_status
from tests.training.trainer_helpers import FAKE_KOHYA, REPO, seed_bucket


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path / "bucket")
    seed_bucket(storage, images=3)
    monkeypatch.setenv("LORA_CLOUD_STORAGE", storage.url)
    monkeypatch.setenv("LORA_CLOUD_KOHYA_LAUNCHER", f"{sys.executable} {FAKE_KOHYA}")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return storage


def _invoke(*args):
    return CliRunner().invoke(app, ["--json", *args], catch_exceptions=False)


def _wait_status(storage, run_id, done, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = read_status(storage, run_id)
        if st is not None and done(st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not get there: {read_status(storage, run_id)}")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _start(*extra):
    return _invoke("train", "start", "--dataset", "cat", "--provider", "local", "--set", "subset.num_repeats=2",
                   "--set", "max_train_epochs=2", *extra)


def test_start_runs_the_trainer_and_relaunch_attaches_to_the_live_run(bucket, monkeypatch):
    monkeypatch.setenv("FAKE_KOHYA_STEP_SECONDS", "0.1")
    r = _start()
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["attached"] is False and first["gpu"] == "local GPU"
    again = json.loads(_start().stdout)  # a re-queued graph: same dataset, same settings
    assert again["run_id"] == first["run_id"] and again["attached"] is True
    assert again["state"] in ("starting", "training") and again["instance_id"] == first["instance_id"]

    status = _wait_status(bucket, first["run_id"], lambda st: st.state.is_terminal)
    assert status.state.value == "done" and status.lora == "loras/cat.safetensors"
    spec = json.loads(bucket.read_bytes(f"runs/{first['run_id']}/spec.json"))
    assert spec["overrides"] == {"subset.num_repeats": 2, "max_train_epochs": 2} and spec["max_hours"] == 6.0
    store = StateStore(Settings.load().state_db)
    run = store.get_run(first["run_id"])
    assert run.instance_id == first["instance_id"] and run.provider == "local" and run.config_hash


def test_stop_destroys_the_instance_and_marks_the_run(bucket, monkeypatch):
    monkeypatch.setenv("FAKE_KOHYA_STEP_SECONDS", "0.5")
    started = json.loads(_start().stdout)
    run_id = started["run_id"]
    _wait_status(bucket, run_id, lambda st: st.state.value == "training" and st.step > 0)
    (kohya_pid_file,) = (Settings.load().home / "local-instances").glob("*/kohya.pid")
    kohya_pid = int(kohya_pid_file.read_text())
    assert _alive(kohya_pid)
    r = _invoke("train", "stop", run_id)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["destroyed"] is True
    status = read_status(bucket, run_id)
    assert status.state.value == "stopped" and status.message == "stopped by the user"
    store = StateStore(Settings.load().state_db)
    assert store.get_run(run_id).state.value == "stopped"
    assert not bucket.exists("loras/cat.safetensors")
    end = time.monotonic() + 10
    while _alive(kohya_pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(kohya_pid)  # destroying the instance took kohya down with the trainer


def test_start_needs_a_bucket_a_rented_gpu_can_reach(bucket):
    r = CliRunner().invoke(app, ["train", "start", "--dataset", "cat", "--provider", "vast"])
    assert r.exit_code == 2 and "gs:// bucket" in r.output


def test_start_refuses_bad_overrides_before_renting(bucket):
    r = CliRunner().invoke(app, ["train", "start", "--dataset", "cat", "--provider", "local", "--set",
                                 "resolution=\"x\""])
    assert r.exit_code == 2 and "expected int" in r.output


def test_a_dead_local_run_neither_blocks_a_new_start_nor_hangs_follow(bucket, monkeypatch):
    """The trainer process of a local run dies without a word (kill -9): the next `train start`
    with the same settings starts afresh instead of answering "already running", and
    `train status --follow` on the dead run ends."""
    import contextlib
    import os
    import signal

    monkeypatch.setenv("FAKE_KOHYA_STEP_SECONDS", "0.5")
    first = json.loads(_start().stdout)
    _wait_status(bucket, first["run_id"], lambda st: st.state.value == "training" and st.step > 0)
    record = json.loads((Settings.load().home / "local-instances" / f"{first['instance_id']}.json").read_text())
    (kohya_pid_file,) = (Settings.load().home / "local-instances").glob("*/kohya.pid")
    # the whole "container" at once (its own session: the trainer, and kohya if it is in that group),
    # so no process is left to report the end before the next start looks
    os.killpg(int(record["pid"]), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(kohya_pid_file.read_text()), signal.SIGKILL)
    end = time.monotonic() + 10
    while _alive(int(record["pid"])) and time.monotonic() < end:
        time.sleep(0.05)

    second = json.loads(_start().stdout)
    assert second["attached"] is False and second["run_id"] != first["run_id"]
    store = StateStore(Settings.load().state_db)
    dead = store.get_run(first["run_id"])
    assert dead.state.value == "failed" and "without reporting" in dead.error
    r = _invoke("train", "status", first["run_id"], "--follow", "--interval", "0.05")
    assert r.exit_code == 7, r.output  # a failed run: TrainingError's exit code, so a script can tell
    assert '"state": "failed"' in r.stdout  # the last line: the run's end, from this controller's record
    _invoke("train", "stop", second["run_id"])
