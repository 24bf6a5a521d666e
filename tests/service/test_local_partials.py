"""A local upload killed mid-way leaves a hidden partial file in the bucket folder; the next write
into that folder and the guard pass remove it, and neither ever removes the partial of an upload
that is still writing, however old it looks (storage/landing.py:writing_partial, sweep_partials;
storage/local.py:LocalStorage.sweep_partials).

The uploads are the real `lora-cloud dataset upload` in a subprocess, held mid-copy by a gate
file (tests/faults/slow_transfers_cli.py) and killed with SIGKILL.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from comfy_lora_cloud.models import Run, RunState
from comfy_lora_cloud.providers.base import run_label
from comfy_lora_cloud.providers.vast import VastClient, VastProvider
from comfy_lora_cloud.service.money.budgets import Budgets
from comfy_lora_cloud.service.guard.guard import Guard
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.storage.landing import PARTIAL, sweep_partials
from comfy_lora_cloud.storage.layout import DATASET_LOCK
from tests.cli.conftest import Cli
from tests.faults.test_data_safety import wait_until
from tests.service.conftest import API_KEY

REPO = Path(__file__).resolve().parents[2]


def partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(PARTIAL)) if folder.is_dir() else []


def copying(folder: Path) -> list[Path]:
    """The partials of the photos being copied (held by the gate), not the one the upload's lock
    record passes through on its way (written whole, ungated: it can come and go at any time)."""
    return [p for p in partials(folder) if DATASET_LOCK not in p.name]


@pytest.fixture
def photos(tmp_path) -> Path:
    """Two photos, one of them big enough (noise, ~1 MB) to be copied in many pieces."""
    src = tmp_path / "photos"
    src.mkdir()
    rng = random.Random(7)
    Image.frombytes("RGB", (600, 600), bytes(rng.getrandbits(8) for _ in range(600 * 600 * 3))).save(src / "a.png")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(src / "b.png")
    for name in ("a", "b"):
        (src / f"{name}.txt").write_text(f"ohwx photo {name}")
    return src


@pytest.fixture
def local(clean_env):
    env = dict(os.environ, LORA_CLOUD_HOME=str(clean_env), COLUMNS="200", LORA_CLOUD_SYNC_WORKERS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return LocalStorage(clean_env / "bucket"), env


def held_upload(env: dict[str, str], gate: Path, src: Path, name: str) -> subprocess.Popen:
    """`lora-cloud dataset upload SRC --name NAME`, held at its first copied piece while ``gate`` exists."""
    gate.touch()
    return subprocess.Popen([sys.executable, "-m", "tests.faults.slow_transfers_cli", "0", str(gate), "dataset",
                             "upload", str(src), "--name", name], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def killed_upload(env: dict[str, str], tmp_path: Path, src: Path, folder: Path) -> Path:
    """A real upload killed (SIGKILL) while it writes; returns the partial it left in ``folder``."""
    proc = held_upload(env, tmp_path / "gate", src, folder.name)
    wait_until(lambda: copying(folder), "the upload to start copying into the bucket folder")
    proc.kill()
    proc.communicate(timeout=30)  # reaped, its pipes closed
    [left] = copying(folder)
    return left


def test_a_killed_uploads_partial_goes_at_the_next_write_into_its_folder(local, photos, tmp_path):
    storage, env = local
    folder = storage.root / "datasets" / "big"
    left = killed_upload(env, tmp_path, photos, folder)
    assert left.name.endswith(".part")
    assert [o.key for o in storage.list("datasets/big/").objects if PARTIAL in o.key] == []  # hidden from listings
    # the same upload again (from a new process) finishes it, and its first write sweeps the folder
    out = Cli(env).json("dataset", "upload", str(photos), "--name", "big")
    assert out["result"] == "created"  # the killed one had committed no object: its lease is taken over
    assert partials(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a.txt", "b.png", "b.txt", "dataset.json"]


def test_a_live_uploads_partial_is_never_swept_however_old(local, photos, tmp_path):
    storage, env = local
    folder = storage.root / "datasets" / "live"
    gate = tmp_path / "gate"
    proc = held_upload(env, gate, photos, "live")
    try:
        wait_until(lambda: copying(folder), "the upload to start copying into the bucket folder")
        [writing] = copying(folder)
        os.utime(writing, (time.time() - 7200, time.time() - 7200))  # untouched for 2 h, by its mtime
        assert sweep_partials(folder) == []  # its writer holds the lock
        storage.write_bytes("datasets/live/note.txt", b"a write into the same folder")
        assert storage.sweep_partials() == []
        assert copying(folder) == [writing]
    finally:
        gate.unlink()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert partials(folder) == [] and storage.exists("datasets/live/dataset.json")
    assert storage.read_bytes("datasets/live/a.png") == (photos / "a.png").read_bytes()


async def test_the_guard_pass_sweeps_a_killed_uploads_partial(local, photos, tmp_path, fake, clock):
    storage, env = local
    folder = storage.root / "datasets" / "half"
    left = killed_upload(env, tmp_path, photos, folder)
    client = VastClient(fake.url, API_KEY)
    try:
        rows = await client.search_offers({"num_gpus": {"eq": 1}, "order": [["dph_total", "asc"]], "limit": 1})
        made = await client.create_instance(rows[0]["id"], image="i", label=run_label("r1"), disk_gb=10)
        state = StateStore(tmp_path / "state.db")
        state.put_run(Run(id="r1", dataset="half", preset="character", lora_name="l", state=RunState.TRAINING,
                          instance_id=str(made["new_contract"])))
        guard = Guard(VastProvider(client), state, Budgets(), storage=storage, clock=clock, grace_s=0)
        result = await guard.run_once()
    finally:
        await client.aclose()
    assert result.swept == (left.relative_to(storage.root).as_posix(),)
    assert partials(folder) == [] and fake.state.get(int(made["new_contract"])) is not None
