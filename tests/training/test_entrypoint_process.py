"""The trainer entrypoint as the image runs it: a subprocess, a bucket, fake kohya, a vast.ai
server that records the self-destroy call."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from comfy_lora_cloud.storage import checksum_file
from comfy_lora_cloud.storage.local import LocalStorage
from tests.training.trainer_helpers import (
    CONTAINER_KEY, HF_TOKEN, TrainerProcess, argv_log, events_of, read_json, seed_bucket, small_spec,
    state_sequence,
)


def _trainer(tmp_path: Path, storage_url: str, vast_url: str, **env: str) -> TrainerProcess:
    env.setdefault("FAKE_KOHYA_ARGV_LOG", str(tmp_path / "argv.jsonl"))
    return TrainerProcess(storage_url=storage_url, workdir=tmp_path / "work", vast_url=vast_url, env=env)


async def test_full_run_uploads_verified_lora_and_destroys_itself(tmp_path, bucket, vast):
    fake_vast, vast_url = vast
    small_spec().save(bucket)
    trainer = _trainer(tmp_path, bucket.url, vast_url)

    rc, out = await trainer.run("run1")

    assert rc == 0, out
    status = read_json(bucket, "runs/run1/status.json")
    assert status["state"] == "done"
    assert (status["step"], status["total_steps"], status["epoch"], status["total_epochs"]) == (24, 24, 4, 4)
    assert status["loss"] is not None and status["sec_per_step"] == 1.5
    assert status["lora"] == "loras/cat.safetensors" and status["error"] is None
    assert status["last_checkpoint"] == "cat-000003-state"
    # the LoRA in the bucket is byte-identical to what kohya wrote, and its JSON says so
    local = checksum_file(tmp_path / "work" / "output" / "cat.safetensors")
    assert bucket.stat("loras/cat.safetensors").md5 == local.md5
    meta = read_json(bucket, "loras/cat.json")
    assert (meta["md5"], meta["size"], meta["run_id"], meta["preset"], meta["trigger"]) == (
        local.md5, local.size, "run1", "character", "ohwx cat")
    assert meta["sample_images"] == ["runs/run1/samples/cat_e000002_00_20260101000000_42.png",
                                     "runs/run1/samples/cat_e000004_00_20260101000000_42.png"]
    assert all(bucket.exists(k) for k in meta["sample_images"])
    events = events_of(bucket, "run1")
    assert state_sequence(events) == ["starting", "training", "uploading", "done"]
    assert [e["epoch"] for e in events if e["kind"] == "epoch"] == [1, 2, 3, 4]
    # how many epochs' states are seen depends on speed; the newest always is, in order
    uploaded = [e["epoch"] for e in events if e["kind"] == "checkpoint"]
    assert uploaded[-1] == 3 and uploaded == sorted(set(uploaded))
    # only the newest checkpoint is kept in the bucket
    latest = read_json(bucket, "runs/run1/checkpoints/latest.json")
    assert latest["name"] == "cat-000003-state" and latest["epoch"] == 3
    ckpt_keys = {o.key for o in bucket.list("runs/run1/checkpoints/").objects}
    assert ckpt_keys == {"runs/run1/checkpoints/latest.json"} | {
        f"runs/run1/checkpoints/cat-000003-state/{f}"
        for f in ("model.safetensors", "optimizer.bin", "train_state.json")}
    log = bucket.read_bytes("runs/run1/logs/trainer.log").decode()
    assert "model saved." in log and "total optimization steps" in log
    # kohya never saw a secret, and none leaked into the bucket
    assert argv_log(tmp_path / "argv.jsonl")[0]["secret_env"] == []
    for key in ("runs/run1/logs/trainer.log", "runs/run1/status.json", "runs/run1/events.jsonl", "loras/cat.json"):
        text = bucket.read_bytes(key).decode()
        assert HF_TOKEN not in text and CONTAINER_KEY not in text
    assert fake_vast.deletes == [{"id": "4242", "auth": f"Bearer {CONTAINER_KEY}"}]


async def test_kohya_failure_marks_failed_uploads_log_and_destroys(tmp_path, bucket, vast):
    fake_vast, vast_url = vast
    small_spec().save(bucket)
    rc, out = await _trainer(tmp_path, bucket.url, vast_url, FAKE_KOHYA_FAIL_AT_STEP="9").run("run1")

    assert rc == 1, out
    status = read_json(bucket, "runs/run1/status.json")
    assert status["state"] == "failed"
    assert "exit 1" in status["error"] and "CUDA out of memory" in status["error"]
    assert status["step"] == 8  # the last step kohya reported
    assert "Traceback (most recent call last)" in bucket.read_bytes("runs/run1/logs/trainer.log").decode()
    assert not bucket.exists("loras/cat.safetensors")
    assert state_sequence(events_of(bucket, "run1")) == ["starting", "training", "failed"]
    assert len(fake_vast.deletes) == 1


async def test_kohya_exit_zero_without_lora_is_a_failure(tmp_path, bucket, vast):
    fake_vast, vast_url = vast
    small_spec().save(bucket)
    rc, out = await _trainer(tmp_path, bucket.url, vast_url, FAKE_KOHYA_NO_LORA="1").run("run1")

    assert rc == 1, out
    status = read_json(bucket, "runs/run1/status.json")
    assert status["state"] == "failed"
    assert "exited 0 without writing the LoRA" in status["error"] and "no images" in status["error"]
    assert not bucket.list("loras/").objects
    assert len(fake_vast.deletes) == 1


async def test_deadline_kills_kohya_keeps_checkpoint_and_times_out(tmp_path, bucket, vast):
    fake_vast, vast_url = vast
    # 4 epochs x 6 steps x 0.3 s ≈ 7 s of training against a 4 s limit: the first epoch's
    # checkpoint is out before the deadline, the run is not finished by then
    small_spec(max_hours=4 / 3600).save(bucket)
    trainer = _trainer(tmp_path, bucket.url, vast_url, FAKE_KOHYA_STEP_SECONDS="0.3")
    rc, out = await trainer.run("run1")

    assert rc == 1, out
    status = read_json(bucket, "runs/run1/status.json")
    assert status["state"] == "timed_out"
    assert "limit of" in status["error"]
    assert 0 < status["step"] < 24
    assert status["last_checkpoint"] and bucket.exists("runs/run1/checkpoints/latest.json")
    assert not bucket.exists("loras/cat.safetensors")
    kohya_pid = int((tmp_path / "work" / "kohya.pid").read_text())
    await _wait_for(lambda: not _alive(kohya_pid), timeout=10)
    assert len(fake_vast.deletes) == 1


async def test_sigkill_mid_run_then_restart_resumes_from_bucket_checkpoint(tmp_path, bucket, vast):
    fake_vast, vast_url = vast
    small_spec().save(bucket)
    first = _trainer(tmp_path, bucket.url, vast_url, FAKE_KOHYA_STEP_SECONDS="0.1")
    proc = await first.start("run1")
    try:
        await _wait_for(lambda: _checkpoint_epoch(bucket) >= 2, timeout=40)
    finally:  # the instance dies: the trainer's process group, kohya included
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    kohya_pid = int((first.workdir / "kohya.pid").read_text())
    await _wait_for(lambda: not _alive(kohya_pid), timeout=10)
    killed_at = read_json(bucket, "runs/run1/status.json")
    assert killed_at["state"] == "training"
    epoch = _checkpoint_epoch(bucket)
    assert fake_vast.deletes == []  # SIGKILL: no goodbye (the controller's reconcile handles that)

    # a new instance: empty workdir, same bucket
    second = _trainer(tmp_path, bucket.url, vast_url)
    second.workdir = tmp_path / "work2"
    rc, out = await second.run("run1")

    assert rc == 0, out
    runs = argv_log(tmp_path / "argv.jsonl")
    assert len(runs) == 2 and "--resume" not in runs[0]["argv"]
    resume = runs[1]["argv"]
    assert resume[resume.index("--resume") + 1] == str(second.workdir / "output" / f"cat-{epoch:06d}-state")
    assert resume[resume.index("--initial_epoch") + 1] == str(epoch + 1)
    status = read_json(bucket, "runs/run1/status.json")
    assert status["state"] == "done" and status["step"] == 24 == status["total_steps"]
    events = events_of(bucket, "run1")
    assert {"kind": "resumed", "checkpoint": f"cat-{epoch:06d}-state", "epoch": epoch}.items() <= [
        e for e in events if e["kind"] == "resumed"][0].items()
    # the resumed kohya trained only the remaining epochs, and the step count went on from the checkpoint
    assert [e["epoch"] for e in events if e["kind"] == "epoch"][-(4 - epoch):] == list(range(epoch + 1, 5))
    assert state_sequence(events) == ["starting", "training", "starting", "training", "uploading", "done"]
    assert bucket.exists("loras/cat.safetensors")
    assert len(fake_vast.deletes) == 1


async def test_restart_after_done_does_not_train_again(tmp_path, bucket, vast):
    fake_vast, vast_url = vast
    small_spec().save(bucket)
    trainer = _trainer(tmp_path, bucket.url, vast_url)
    assert (await trainer.run("run1"))[0] == 0
    first_md5 = bucket.stat("loras/cat.safetensors").md5

    rc, out = await trainer.run("run1")

    assert rc == 0, out
    assert len(argv_log(tmp_path / "argv.jsonl")) == 1  # kohya ran once
    assert bucket.stat("loras/cat.safetensors").md5 == first_md5
    assert len(fake_vast.deletes) == 2  # but the (re-rented) instance still goes away


async def test_lora_name_owned_by_another_run_is_not_overwritten(tmp_path, bucket, vast):
    _, vast_url = vast
    bucket.write_bytes("loras/cat.safetensors", b"someone else's LoRA")
    bucket.write_bytes("loras/cat.json", b'{"run_id": "older-run"}')
    small_spec().save(bucket)
    rc, out = await _trainer(tmp_path, bucket.url, vast_url).run("run1")

    assert rc == 0, out
    assert bucket.read_bytes("loras/cat.safetensors") == b"someone else's LoRA"
    assert read_json(bucket, "runs/run1/status.json")["lora"] == "loras/cat-run1.safetensors"
    assert read_json(bucket, "loras/cat-run1.json")["run_id"] == "run1"


async def test_full_run_against_gcs_emulator(tmp_path, gcs_bucket, vast):
    from comfy_lora_cloud.storage import open_storage

    fake_vast, vast_url = vast
    url = f"gs://{gcs_bucket}/lora"
    storage = open_storage(url)
    seed_bucket(storage)
    small_spec().save(storage)
    rc, out = await _trainer(tmp_path, url, vast_url, STORAGE_EMULATOR_HOST=os.environ["STORAGE_EMULATOR_HOST"]
                             ).run("run1")

    assert rc == 0, out
    assert read_json(storage, "runs/run1/status.json")["state"] == "done"
    local = checksum_file(tmp_path / "work" / "output" / "cat.safetensors")
    assert storage.stat("loras/cat.safetensors").md5 == local.md5
    assert storage.exists("runs/run1/checkpoints/latest.json")
    assert len(fake_vast.deletes) == 1


def _checkpoint_epoch(storage: LocalStorage) -> int:
    if not storage.exists("runs/run1/checkpoints/latest.json"):
        return 0
    return read_json(storage, "runs/run1/checkpoints/latest.json")["epoch"]


async def _wait_for(condition, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by its dead parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_sigterm_saves_the_checkpoint_reports_preempted_and_keeps_the_instance(tmp_path, bucket, vast):
    """vast.ai stopping the container (docker stop: SIGTERM to every process, then SIGKILL): the
    trainer kills kohya, uploads the newest whole state, says ``preempted`` with the logs, and
    leaves the instance alone. Started again on the same disk, it resumes from the local copy."""
    fake_vast, vast_url = vast
    small_spec().save(bucket)
    # kohya stops at overall step 9 (mid epoch 2): the state of epoch 1 is on disk, maybe not uploaded yet
    trainer = _trainer(tmp_path, bucket.url, vast_url, FAKE_KOHYA_PAUSE_AT="9", FAKE_KOHYA_PAUSE_DIR=str(tmp_path))
    proc = await trainer.start("run1")
    await _wait_for(lambda: (tmp_path / "paused-9").exists(), timeout=40)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)

    assert proc.returncode == 143, out.decode(errors="replace")
    status = read_json(bucket, "runs/run1/status.json")
    assert status["state"] == "preempted" and status["error"] is None
    assert status["step"] == 9 and "cat-000001-state" in status["message"]
    assert _checkpoint_epoch(bucket) == 1  # the state on disk went to the bucket before the exit
    preempted = [e for e in events_of(bucket, "run1") if e["kind"] == "preempted"]
    assert [(e["step"], e["checkpoint_step"], e["instance"], e["by"]) for e in preempted] == [(9, 6, "4242", "trainer")]
    assert "SIGTERM" in bucket.read_bytes("runs/run1/logs/trainer.log").decode()
    assert fake_vast.deletes == []  # the instance is the controller's to resume or destroy
    kohya_pid = int((trainer.workdir / "kohya.pid").read_text())
    await _wait_for(lambda: not _alive(kohya_pid), timeout=10)

    kept = trainer.workdir / "output" / "cat-000001-state" / "optimizer.bin"
    before = kept.stat().st_mtime_ns
    rc, out2 = await trainer.run("run1")  # the instance resumes: same disk, the trainer starts again

    assert rc == 0, out2
    assert kept.stat().st_mtime_ns == before  # resumed from the local copy (it matched the manifest)
    status = read_json(bucket, "runs/run1/status.json")
    assert status["state"] == "done" and status["step"] == 24 == status["total_steps"]
    events = events_of(bucket, "run1")
    assert [(e["step"], e["instance"]) for e in events if e["kind"] == "resumed"] == [(6, "4242")]
    assert state_sequence(events) == ["starting", "training", "preempted", "starting", "training", "uploading",
                                      "done"]
    assert len(fake_vast.deletes) == 1
