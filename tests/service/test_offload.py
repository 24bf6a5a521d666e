"""Heavy work started from ComfyUI runs in a worker process: the sync engine's planning
and transfers and a dataset preparation go to ``python -m comfy_lora_cloud.service.library.offload``,
their progress comes back to the same callbacks, their errors come back as themselves. Proven
by poisoning the engine in this process: whatever still works ran elsewhere."""

from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image

from comfy_lora_cloud.errors import DatasetError, StorageError
from comfy_lora_cloud.service.library import offload
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage, layout, sync


@pytest.fixture
def offloading(monkeypatch, clean_env):
    """Offload on (as ComfyUI's wiring sets it), with this process's engine poisoned."""
    monkeypatch.setattr(offload, "_state", {"enabled": True, "home": str(clean_env)})

    def poisoned(*a, **k):
        raise AssertionError("ran in the server process")

    for name in ("plan_push", "plan_pull", "apply"):
        monkeypatch.setattr(sync, name, poisoned)
    return clean_env


def folder(tmp_path, n: int, manifest: bool = True):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):  # whole PNGs (an upload decodes every image), each one different
        img = Image.frombytes("RGB", (8, 8), os.urandom(8 * 8 * 3))
        img.save(src / f"{i:03}.png", "PNG")
        (src / f"{i:03}.txt").write_text(f"caption {i}")
    if manifest:
        (src / layout.MANIFEST).write_text(json.dumps({"trigger": "sks", "files": []}))
    return src


async def test_a_dataset_upload_and_download_run_in_a_worker_with_progress(offloading, tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    app = App(Settings.load(offloading), storage=storage)
    src = folder(tmp_path, 40)
    seen = []
    result = await app.library.upload_dataset(src, "big", progress=seen.append)
    assert (result["result"], result["files"]) == ("created", 80)
    # streamed back: one event per file (threads report in any order)
    assert len(seen) == 80 and max(e.files_done for e in seen) == 80 and {e.files_total for e in seen} == {80}
    assert sorted(o.key for o in storage.list("datasets/big/").objects)[:2] == ["datasets/big/000.png",
                                                                                  "datasets/big/000.txt"]
    # the worker's hashes reached this process's cache file: a re-upload plans nothing to send
    assert (await app.library.upload_dataset(src, "big"))["result"] == "unchanged"

    got = []
    down = await app.library.download_dataset("big", tmp_path / "down", progress=got.append)
    assert down["files"] == 81 and len(got) == 81
    assert (tmp_path / "down" / "039.txt").read_text() == "caption 39"


async def test_errors_come_back_as_themselves(offloading, tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    src = folder(tmp_path, 40)
    plan = offload.plan_push(storage, src, "datasets/x/")
    assert len(plan.transfers) == 81
    (src / "007.png").unlink()  # gone between the plan and the transfer
    with pytest.raises(StorageError, match="does not exist"):
        offload.apply(plan, storage, workers=4)


async def test_small_jobs_and_the_cli_stay_in_process(monkeypatch, tmp_path, clean_env):
    calls = []
    monkeypatch.setattr(offload, "_run", lambda *a, **k: calls.append(a) or None)
    storage = LocalStorage(tmp_path / "bucket")
    src = folder(tmp_path, 40)
    offload.enable(False)
    assert len(offload.plan_push(storage, src, "datasets/x/").transfers) == 81  # disabled: here
    monkeypatch.setattr(offload, "_state", {"enabled": True, "home": None})
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.png").write_bytes(b"png")
    plan = offload.plan_push(storage, small, "datasets/y/")
    offload.apply(plan, storage)
    assert calls == [] and storage.exists("datasets/y/a.png")


def photo(seed: int) -> bytes:
    img = Image.new("RGB", (640, 480), (seed * 7 % 255, 90, 160))
    out = io.BytesIO()
    img.save(out, "JPEG")
    return out.getvalue()


async def test_a_preparation_runs_in_a_worker_with_its_stages(offloading, tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    app = App(Settings.load(offloading), storage=storage)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        (photos / f"p{i}.jpg").write_bytes(photo(i))
    stages = []
    result = await app.library.prepare(str(photos), "prepped", lora_type="style", trigger="sks", workers=1,
                                       resolution=512, progress=lambda stage, done, total: stages.append(stage))
    assert result.images == 6 and result.out_dir is None
    assert "upload" in stages  # progress streamed back from the worker, upload included
    assert storage.exists("datasets/prepped/dataset.json")
    with pytest.raises(DatasetError, match="no folder"):  # an error in the worker comes back typed
        await app.library.prepare(str(tmp_path / "missing"), "other", lora_type="style", workers=1)
