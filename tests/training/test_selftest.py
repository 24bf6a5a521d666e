"""The trainer image's self-test (worker/selftest.py), run here outside an image: its end-to-end
check against a folder and against a GCS bucket (the emulator), its cleanup, that it never
destroys the instance it runs on, that a failure says so, and that the entrypoint's --self-test
reaches it. Inside the built images: tests/images/ (opt-in)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.worker.selftest import run_self_test
from tests.training.trainer_helpers import CONTAINER_KEY, FAKE_KOHYA, REPO

E2E = ("end to end",)


@pytest.fixture(autouse=True)
def _child_finds_this_checkout(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def test_end_to_end_against_a_folder_passes_and_cleans_up(tmp_path, capsys):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "keep.txt").write_text("the user's")

    rc = run_self_test(str(bucket), str(tmp_path / "w"), standin=str(FAKE_KOHYA), checks=E2E)

    out = capsys.readouterr().out
    assert rc == 0, out
    assert "self-test end to end: ok: run selftest-" in out and "md5 verified" in out
    assert out.strip().splitlines()[-1] == "SELF-TEST PASSED"
    # only what was there before is left: the run lived under its own prefix, removed afterwards
    assert sorted(p.name for p in bucket.iterdir()) == ["keep.txt"]
    assert list((tmp_path / "w").iterdir()) == []


def test_end_to_end_against_a_gcs_bucket(tmp_path, gcs_bucket, capsys):
    bucket = open_storage(f"gs://{gcs_bucket}")
    bucket.write_bytes("models/flux1-dev.safetensors", b"the user's real weights")

    rc = run_self_test(f"gs://{gcs_bucket}", str(tmp_path / "w"), standin=str(FAKE_KOHYA), checks=E2E)

    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"against gs://{gcs_bucket}/lora-cloud-selftest-" in out
    # the user's objects are untouched and the self-test's are gone
    assert [o.key for o in bucket.list("").objects] == ["models/flux1-dev.safetensors"]
    assert bucket.read_bytes("models/flux1-dev.safetensors") == b"the user's real weights"


async def test_never_destroys_the_instance_it_runs_on(tmp_path, vast, monkeypatch, capsys):
    fake_vast, vast_url = vast
    monkeypatch.setenv("CONTAINER_ID", "4242")
    monkeypatch.setenv("CONTAINER_API_KEY", CONTAINER_KEY)
    monkeypatch.setenv("LORA_CLOUD_VAST_URL", vast_url)

    # the child is a separate process: the fake server (this loop) must keep answering meanwhile
    import asyncio

    rc = await asyncio.to_thread(run_self_test, str(tmp_path / "b"), str(tmp_path / "w"),
                                 standin=str(FAKE_KOHYA), checks=E2E)

    assert rc == 0, capsys.readouterr().out
    assert fake_vast.deletes == []


def test_a_failed_run_fails_the_self_test(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_KOHYA_FAIL_AT_STEP", "2")

    rc = run_self_test(str(tmp_path / "b"), str(tmp_path / "w"), standin=str(FAKE_KOHYA), checks=E2E)

    out = capsys.readouterr().out
    assert rc == 1
    assert "self-test end to end: FAILED: the entrypoint exited 1 with the run failed" in out
    assert "CUDA out of memory" in out
    assert out.strip().splitlines()[-1] == "SELF-TEST FAILED"


def test_a_missing_stand_in_fails_before_touching_the_bucket(tmp_path, capsys):
    rc = run_self_test(str(tmp_path / "b"), str(tmp_path / "w"), standin=str(tmp_path / "nope.py"), checks=E2E)

    assert rc == 1
    assert "no stand-in kohya at" in capsys.readouterr().out
    assert not (tmp_path / "b").exists()


def test_entrypoint_flag_runs_every_check_and_reports_each(tmp_path):
    """``--self-test`` on the entrypoint: here there is no sd-scripts (KOHYA_DIR is empty), so the
    imports and parser checks fail and say why, while the end-to-end check still runs and passes."""
    kohya = tmp_path / "no-sd-scripts"
    kohya.mkdir()
    env = {**os.environ, "KOHYA_DIR": str(kohya), "LORA_CLOUD_SELFTEST_KOHYA": str(FAKE_KOHYA)}
    proc = subprocess.run([sys.executable, "-m", "comfy_lora_cloud.worker.entrypoint", "--self-test",
                           "--storage", str(tmp_path / "b"), "--workdir", str(tmp_path / "w")],
                          env=env, capture_output=True, text=True, timeout=240, cwd=REPO)

    lines = [line for line in proc.stdout.splitlines() if line.startswith(("self-test", "SELF-TEST"))]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("self-test imports: FAILED: ") and "flux_train_network" in lines[0]
    assert lines[1].startswith(f"self-test kohya parser: FAILED: no flux_train_network.py in KOHYA_DIR={kohya}")
    assert lines[2].startswith("self-test end to end: ok: ")
    assert lines[3] == "SELF-TEST FAILED"
