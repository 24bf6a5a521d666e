"""Heavy work started from ComfyUI runs in a worker process: the sync engine's planning
and transfers and a dataset preparation go to ``python -m comfy_lora_cloud.service.library.offload``,
their progress comes back to the same callbacks, their errors come back as themselves. Proven
by poisoning the engine in this process: whatever still works ran elsewhere. The decision is an
:class:`Offload` the app is given (ComfyUI's wiring gives it workers; the CLI and tests get one
that runs everything here), so each test builds the one it needs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from comfy_lora_cloud.errors import DatasetError, StorageError
from comfy_lora_cloud.service.library import Offload, offload
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage, layout, sync


@pytest.fixture
def workers(monkeypatch, clean_env):
    """An offload with workers (what ComfyUI's wiring builds), with this process's engine poisoned."""
    def poisoned(*a, **k):
        raise AssertionError("ran in the server process")

    for name in ("plan_push", "plan_pull", "apply"):
        monkeypatch.setattr(sync, name, poisoned)
    offload_ = Offload.in_workers(clean_env)
    yield offload_
    offload_.close()


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


async def test_a_dataset_upload_and_download_run_in_a_worker_with_progress(workers, clean_env, tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    app = App(Settings.load(clean_env), storage=storage, offload=workers)
    src = folder(tmp_path, 40)
    seen = []
    result = await app.library.upload_dataset(src, "big", progress=seen.append)
    assert (result.result, result.files) == ("created", 80)
    # streamed back: one event per file (threads report in any order)
    assert len(seen) == 80 and max(e.files_done for e in seen) == 80 and {e.files_total for e in seen} == {80}
    assert sorted(o.key for o in storage.list("datasets/big/").objects)[:2] == ["datasets/big/000.png",
                                                                                  "datasets/big/000.txt"]
    # the worker's hashes reached this process's cache file: a re-upload plans nothing to send
    assert (await app.library.upload_dataset(src, "big")).result == "unchanged"

    got = []
    down = await app.library.download_dataset("big", tmp_path / "down", progress=got.append)
    assert down.files == 81 and len(got) == 81
    assert (tmp_path / "down" / "039.txt").read_text() == "caption 39"


async def test_errors_come_back_as_themselves(workers, tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    src = folder(tmp_path, 40)
    plan = workers.plan_push(storage, src, "datasets/x/")
    assert len(plan.transfers) == 81
    (src / "007.png").unlink()  # gone between the plan and the transfer
    with pytest.raises(StorageError, match="does not exist"):
        workers.apply(plan, storage, workers=4)


async def test_small_jobs_and_the_cli_stay_in_process(monkeypatch, tmp_path, clean_env):
    calls = []
    here, with_workers = Offload.here(), Offload(workers=True)
    for o in (here, with_workers):
        monkeypatch.setattr(o, "_run", lambda *a, **k: calls.append(a) or None)
    storage = LocalStorage(tmp_path / "bucket")
    src = folder(tmp_path, 40)
    assert len(here.plan_push(storage, src, "datasets/x/").transfers) == 81  # no workers: here
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.png").write_bytes(b"png")
    plan = with_workers.plan_push(storage, small, "datasets/y/")
    with_workers.apply(plan, storage)
    assert calls == [] and storage.exists("datasets/y/a.png")
    # an app nobody gave an offload (the CLI's) runs its transfers here
    app = App(Settings.load(clean_env), storage=storage)
    assert app.offload.workers is False and app.library.offload is app.offload is app.mirror.offload


def test_the_worker_finds_this_pack_where_it_was_loaded():
    """The child is started with the folder that holds ``comfy_lora_cloud/`` first on its path,
    so inside ComfyUI (a custom node folder, nothing installed) it imports this very pack."""
    assert Path(offload._PACK_ROOT, "comfy_lora_cloud", "service", "library", "offload.py") == Path(offload.__file__)


def photo(seed: int) -> bytes:
    img = Image.new("RGB", (640, 480), (seed * 7 % 255, 90, 160))
    out = io.BytesIO()
    img.save(out, "JPEG")
    return out.getvalue()


async def test_a_preparation_runs_in_a_worker_with_its_stages(workers, clean_env, tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    app = App(Settings.load(clean_env), storage=storage, offload=workers)
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


async def test_the_nodes_save_and_load_a_dataset_through_the_apps_offload(workers, tmp_path, clean_env):
    """Save Dataset (through the app's library) and Load Images (``service/graph.py``, given the
    app's offload) run their transfers in the workers: with this process's engine poisoned, they
    still work."""
    from comfy_lora_cloud.service import graph

    storage = LocalStorage(tmp_path / "bucket")
    app = App(Settings.load(clean_env), storage=storage, offload=workers)
    work = graph.WorkArea(tmp_path / "work")
    images = graph.load_images("folder", str(folder(tmp_path, 40)), storage=None, work=work)
    ref = await graph.save_dataset(images, "from-node", library=app.library)
    assert (ref.name, ref.images, ref.captioned) == ("from-node", 40, 40)
    loaded = graph.load_images("dataset", "from-node", storage=storage, work=work, transfers=workers)
    assert loaded.count == 40 and loaded.prepared
