"""Fault scenarios for data safety: nothing a command does, or a kill -9 in the middle of it,
may lose an object or leave a half dataset or a half LoRA that looks whole.

Every scenario runs the real `lora-cloud` entry point in subprocesses, on the local bucket and,
where the bucket's own rules matter (preconditions, prefixes), on GCS (the real client against
gcp-storage-emulator). Each one counts the objects before and after: ``lost`` is every object
that was there before and is gone or changed after, and must be 0 unless the scenario asked
for a deletion. A killed process is a real SIGKILL; the transfers of the process to be killed
are slowed (tests/faults/slow_transfers_cli.py) so the kill lands mid-way, not by luck.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import pytest
from PIL import Image

from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.storage.landing import PARTIAL
from tests.cli.conftest import Cli, _entry_point
from tests.faults.registry import OBSERVED

REPO = Path(__file__).resolve().parents[2]
DANGEROUS_PREFIXES = ["", "/", "datasets/", "loras/", "runs/", "models/", "workflows/"]
LOCK = ".lora-cloud-lock.json"


# ---- the world each scenario starts from -------------------------------------------------------
def png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (seed % 256, (seed * 7) % 256, 90)).save(out, "PNG")
    return out.getvalue()


def photo_folder(root: Path, n: int, tag: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{tag}{i:03d}.png").write_bytes(png(i + 31 * len(tag)))
        (root / f"{tag}{i:03d}.txt").write_text(f"ohwx {tag} photo {i}")
    return root


def seed_bucket(storage) -> None:
    """A bucket in use: two datasets, a LoRA, a run, base weights and a workflow."""
    for name in ("cat", "dog"):
        for i in range(3):
            storage.write_bytes(f"datasets/{name}/{i}.png", png(i))
            storage.write_bytes(f"datasets/{name}/{i}.txt", f"ohwx {name}".encode())
        storage.write_bytes(f"datasets/{name}/dataset.json", b'{"settings": {"trigger": "ohwx"}}')
    storage.write_bytes("loras/cat.safetensors", b"\x08" + b"\x00" * 7 + b"{}      " + os.urandom(2000))
    storage.write_bytes("runs/r1/status.json", b'{"run_id": "r1", "state": "done"}')
    storage.write_bytes("models/ae.safetensors", os.urandom(3000))
    storage.write_bytes("workflows/train.json", b"{}")


def objects(storage) -> dict[str, str]:
    return {o.key: o.md5 or o.crc32c for o in storage.list("").objects if not o.key.endswith(LOCK)}


def lost(before: dict[str, str], after: dict[str, str], allowed: Iterable[str] = ()) -> list[str]:
    """Objects gone or changed that the scenario did not ask to change; counted in the
    fault-injection summary's "objects lost"."""
    gone = sorted(k for k, md5 in before.items() if after.get(k) != md5 and k not in set(allowed))
    OBSERVED.objects_lost += len(gone)
    return gone


@pytest.fixture(autouse=True)
def counted_as_a_scenario():
    """Each test here is one row of the fault-injection summary."""
    OBSERVED.scenarios += 1


def dataset_files(storage, name: str) -> dict[str, str]:
    prefix = f"datasets/{name}/"
    return {k[len(prefix):]: v for k, v in objects(storage).items() if k.startswith(prefix) and not
            k.endswith("dataset.json")}


def folder_files(root: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in root.iterdir() if p.is_file()}


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class World:
    """A bucket (local or GCS), a `lora-cloud` to run on it, and a way to start a slowed one."""

    def __init__(self, storage, env: dict[str, str], home: Path):
        self.storage, self.env, self.home = storage, env, home
        self.cli = Cli(env)

    def slow(self, delay: float, *args: str, gate: Path | None = None) -> subprocess.Popen:
        """`lora-cloud ARGS` with each transfer slowed by ``delay``, and held while ``gate`` exists."""
        env = {**self.env, "PYTHONPATH": os.pathsep.join([str(REPO), self.env.get("PYTHONPATH", "")])}
        return subprocess.Popen([sys.executable, "-m", "tests.faults.slow_transfers_cli", str(delay),
                                 str(gate) if gate else "-", *args],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LORA_CLOUD_HOME=str(home), COLUMNS="200", LORA_CLOUD_SYNC_WORKERS="1", **extra)
    return env


@pytest.fixture
def local_world(clean_env) -> World:
    storage = LocalStorage(clean_env / "bucket")
    seed_bucket(storage)
    return World(storage, _env(clean_env), clean_env)


@pytest.fixture
def gcs_world(clean_env, gcs_env, gcs_bucket) -> World:
    from comfy_lora_cloud.storage.gcs import GcsStorage

    storage = GcsStorage(gcs_bucket, "lora", client=gcs_env.client())
    seed_bucket(storage)
    return World(storage, _env(clean_env, LORA_CLOUD_STORAGE=f"gs://{gcs_bucket}/lora",
                               STORAGE_EMULATOR_HOST=gcs_env.url), clean_env)


@pytest.fixture(params=["local", "gcs"])
def world(request) -> World:
    return request.getfixturevalue(f"{request.param}_world")


# ---- sync --delete -----------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", DANGEROUS_PREFIXES)
def test_push_delete_over_a_dangerous_prefix_is_refused_even_with_yes(local_world, tmp_path, prefix):
    w = local_world
    src = photo_folder(tmp_path / "one", 1, "x")
    before = objects(w.storage)
    proc = w.cli("sync", "push", str(src), prefix, "--delete", "--yes", check=2)
    assert "refusing to mirror with deletes" in proc.stderr and "Traceback" not in proc.stderr
    after = objects(w.storage)
    assert lost(before, after) == [] and after == before  # nothing lost, nothing written either


@pytest.mark.parametrize("prefix", ["", "datasets/"])
def test_push_delete_over_the_bucket_is_refused_on_gcs(gcs_world, tmp_path, prefix):
    w = gcs_world
    before = objects(w.storage)
    proc = w.cli("sync", "push", str(photo_folder(tmp_path / "one", 1, "x")), prefix, "--delete", "--yes", check=2)
    assert "refusing" in proc.stderr
    assert lost(before, objects(w.storage)) == []


@pytest.mark.parametrize("prefix", ["", "datasets/"])
def test_pull_delete_from_a_dangerous_prefix_keeps_local_files(local_world, tmp_path, prefix):
    mine = photo_folder(tmp_path / "mine", 3, "holiday")
    before = folder_files(mine)
    proc = local_world.cli("sync", "pull", prefix, str(mine), "--delete", "--yes", check=2)
    assert "refusing" in proc.stderr
    assert folder_files(mine) == before


def test_push_delete_asks_first_and_without_a_terminal_needs_yes(local_world, tmp_path):
    w = local_world
    src = photo_folder(tmp_path / "new", 1, "n")
    before = objects(w.storage)
    proc = w.cli("sync", "push", str(src), "datasets/cat/", "--delete", check=2)  # stdin is no terminal
    assert "--yes" in proc.stderr and "datasets/cat/dataset.json" not in proc.stderr
    assert "--delete would remove 7 file(s)" in proc.stderr and "0.png" in proc.stderr
    assert objects(w.storage) == before  # refused before any transfer or deletion
    out = w.cli.json("sync", "push", str(src), "datasets/cat/", "--delete", "--yes")
    assert out["deleted"] == 7
    after = objects(w.storage)
    listed = sorted(k for k in before if k.startswith("datasets/cat/"))
    assert lost(before, after, allowed=listed) == []  # nothing beyond what was listed and confirmed
    assert all(k not in after for k in listed if not k.endswith("dataset.json"))  # and exactly that went
    assert set(dataset_files(w.storage, "cat")) == {"n000.png", "n000.txt"}


# ---- interrupted and concurrent uploads ----------------------------------------------------------
def test_kill_mid_upload_leaves_an_incomplete_dataset_that_cannot_train_and_the_next_upload_finishes(
        local_world, tmp_path):
    w = local_world
    src = photo_folder(tmp_path / "photos", 12, "p")
    before = objects(w.storage)
    proc = w.slow(0.1, "dataset", "upload", str(src), "--name", "half")
    wait_until(lambda: len(dataset_files(w.storage, "half")) >= 3, "the upload to get going")
    proc.kill()
    proc.wait()
    assert proc.returncode == -9
    assert not w.storage.exists("datasets/half/dataset.json")
    listed = {d["name"]: d["complete"] for d in w.cli.json("dataset", "list")}
    assert listed == {"cat": True, "dog": True, "half": False}
    assert "INCOMPLETE" in w.cli("dataset", "list").stdout
    plan = w.cli("train", "plan", "--dataset", "half", "--out", str(tmp_path / "plan"), check=6)
    assert "not complete" in plan.stderr
    start = w.cli("train", "start", "--dataset", "half", "--provider", "local", check=6)
    assert "not complete" in start.stderr
    assert not [k for k in objects(w.storage) if k.startswith("runs/") and not k.startswith("runs/r1/")]
    # the same command again (no flag): this machine's killed upload of this folder is finished
    again = w.cli.json("dataset", "upload", str(src), "--name", "half")
    assert again["resumed"] is True and again["skipped"] >= 3
    assert {d["name"]: d["complete"] for d in w.cli.json("dataset", "list")}["half"] is True
    assert dataset_files(w.storage, "half") == folder_files(src)
    assert lost(before, objects(w.storage)) == []


def test_second_upload_while_one_runs_fails_naming_it_and_nothing_mixes(world, tmp_path):
    w = world
    a = photo_folder(tmp_path / "a", 8, "a")
    b = photo_folder(tmp_path / "b", 3, "b")
    before = objects(w.storage)
    gate = tmp_path / "hold"
    gate.touch()  # the first upload takes the lock, then waits at its first transfer
    first = w.slow(0.0, "dataset", "upload", str(a), "--name", "shared", gate=gate)
    wait_until(lambda: w.storage.exists("datasets/shared/" + LOCK), "the first upload to hold the lock")
    for extra in ([], ["--replace"], ["--merge"]):
        proc = w.cli("dataset", "upload", str(b), "--name", "shared", *extra, check=3)
        assert "locked by another writer" in proc.stderr and f"pid {first.pid}" in proc.stderr, proc.stderr
    assert first.poll() is None
    gate.unlink()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert dataset_files(w.storage, "shared") == folder_files(a)  # exactly A: no file of B
    # afterwards B may replace it, and then it is exactly B
    w.cli("dataset", "upload", str(b), "--name", "shared", "--replace")
    assert dataset_files(w.storage, "shared") == folder_files(b)
    assert lost(before, objects(w.storage)) == []


def test_two_uploads_started_together_one_wins_whole(world, tmp_path):
    w = world
    a = photo_folder(tmp_path / "a", 6, "a")
    b = photo_folder(tmp_path / "b", 6, "b")
    procs = [subprocess.Popen(_entry_point() + ["dataset", "upload", str(src), "--name", "race"], env=w.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for src in (a, b)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] in (3, 6), results  # LockHeld (3) or DatasetExists (6)
    winner = (a, b)[[code for code, _ in results].index(0)]
    assert dataset_files(w.storage, "race") == folder_files(winner)


def test_upload_onto_an_existing_dataset_is_refused_without_replace_or_merge(local_world, tmp_path):
    w = local_world
    other = photo_folder(tmp_path / "other", 2, "o")
    before = objects(w.storage)
    proc = w.cli("dataset", "upload", str(other), "--name", "cat", check=6)
    assert "already exists" in proc.stderr and "--replace" in proc.stderr and "--merge" in proc.stderr
    assert objects(w.storage) == before  # 0 lost, 0 added
    w.cli("dataset", "upload", str(other), "--name", "cat", "--merge")
    assert set(dataset_files(w.storage, "cat")) == {"0.png", "0.txt", "1.png", "1.txt", "2.png", "2.txt",
                                                    "o000.png", "o000.txt", "o001.png", "o001.txt"}
    assert lost(before, objects(w.storage), allowed={"datasets/cat/dataset.json"}) == []  # rewritten, listing both


def test_a_stale_lock_from_another_machine_is_taken_over_a_fresh_one_is_not(local_world, tmp_path):
    w = local_world
    src = photo_folder(tmp_path / "p", 2, "p")
    now = time.time()

    def lock(age_s: float) -> None:
        w.storage.write_bytes("datasets/new/" + LOCK, json.dumps({
            "host": "laptop-2", "pid": 77, "user": "ann", "purpose": "uploading /home/ann/pics",
            "started": now - age_s, "heartbeat": now - age_s, "data": {}}).encode())

    lock(60)
    proc = w.cli("dataset", "upload", str(src), "--name", "new", check=3)
    assert "ann@laptop-2" in proc.stderr and "uploading /home/ann/pics" in proc.stderr
    assert set(dataset_files(w.storage, "new")) == set()
    lock(20 * 60)  # its writer stopped renewing it 20 minutes ago
    w.cli("dataset", "upload", str(src), "--name", "new")
    assert dataset_files(w.storage, "new") == folder_files(src)
    assert not w.storage.exists("datasets/new/" + LOCK)


# ---- interrupted LoRA download -------------------------------------------------------------------
def test_kill_mid_lora_download_leaves_no_safetensors_and_the_next_download_cleans_up(local_world, tmp_path):
    w = local_world
    data = os.urandom(2 * 1024 * 1024)
    w.storage.write_bytes("loras/big.safetensors", data)
    loras = tmp_path / "ComfyUI" / "models" / "loras"
    proc = w.slow(0.1, "lora", "download", "big", "--to", str(loras))
    wait_until(lambda: loras.is_dir() and any(p.name.startswith(PARTIAL) for p in loras.iterdir()),
               "the download to start writing")
    proc.kill()
    proc.wait()
    left = [p.name for p in loras.iterdir()]
    assert left and not [n for n in left if n.endswith(".safetensors")]  # ComfyUI lists nothing half done
    assert all(n.startswith(".") and n.endswith(".part") for n in left)
    w.cli("lora", "download", "big", "--to", str(loras))
    assert [p.name for p in loras.iterdir()] == ["big.safetensors"]  # the killed one's partial is gone
    assert (loras / "big.safetensors").read_bytes() == data
