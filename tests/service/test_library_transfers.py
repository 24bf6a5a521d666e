"""The one dataset upload, the one dataset download and the one LoRA download (service/library/store.py),
and the callers that must go through them (graph nodes, runs.fetch_lora), on a local bucket."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comfy_lora_cloud.comfy.nodes.runs import library_lora_name
from comfy_lora_cloud.errors import CorruptRecord, DatasetError, DatasetExists, LockHeld, ObjectNotFound
from comfy_lora_cloud.models import RunState, RunStatus
from comfy_lora_cloud.service import graph
from comfy_lora_cloud.service import library
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.runs import fetch_lora
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage, layout
from comfy_lora_cloud.storage import lock as leases
from comfy_lora_cloud.storage.landing import PARTIAL

MANIFEST = "datasets/cat/dataset.json"
LOCK = "datasets/cat/.lora-cloud-lock.json"


def png(color: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (color, 0, 0)).save(out, "PNG")
    return out.getvalue()


def folder(root: Path, names: dict[str, str], manifest: dict | None = None) -> Path:
    """images named by ``names`` (name -> caption), each a distinct PNG."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, caption) in enumerate(names.items()):
        (root / f"{name}.png").write_bytes(png(i * 20 + len(name)))
        (root / f"{name}.txt").write_text(caption)
    if manifest is not None:
        (root / "dataset.json").write_text(json.dumps(manifest))
    return root


class Recorder:
    """Passes every call through to ``inner`` and records (method, key) in order."""

    def __init__(self, inner, on_call=None):
        self.inner, self.url, self.ops, self.on_call = inner, inner.url, [], on_call

    def __getattr__(self, name):
        fn = getattr(self.inner, name)

        def call(*args, **kwargs):
            key = args[1] if name == "upload_file" else (args[0] if args else None)
            self.ops.append((name, key))
            if self.on_call:
                self.on_call(name, key)
            return fn(*args, **kwargs)

        return call


@pytest.fixture
def bucket(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "bucket")


def snapshot(storage) -> dict[str, str]:
    return {o.key: o.md5 for o in storage.list("").objects}


def writes(rec: Recorder) -> list[tuple[str, str]]:
    return [(op, key) for op, key in rec.ops if op in ("upload_file", "write_bytes", "delete") and key != LOCK]


# ---- upload ----------------------------------------------------------------------------------
def test_upload_writes_the_manifest_last_and_leaves_no_lease(bucket, tmp_path):
    src = folder(tmp_path / "a", {"one": "ohwx cat", "two": "ohwx cat on a sofa"})
    rec = Recorder(bucket)
    out = library.upload_dataset(rec, src, "cat")
    assert out.result == "created" and out.files == 4
    assert writes(rec)[-1] == ("write_bytes", MANIFEST)
    assert sorted(k for op, k in writes(rec)[:-1]) == [f"datasets/cat/{n}" for n in
                                                       ("one.png", "one.txt", "two.png", "two.txt")]
    assert not bucket.exists(LOCK)
    d = library.describe_dataset(bucket, "cat")
    assert (d.images, d.captioned, d.complete) == (2, 2, True)


def test_changing_a_dataset_takes_its_manifest_away_first(bucket, tmp_path):
    library.upload_dataset(bucket, folder(tmp_path / "a", {"one": "x"}), "cat")
    rec = Recorder(bucket)
    library.upload_dataset(rec, folder(tmp_path / "b", {"three": "y"}), "cat", replace=True)
    ops = writes(rec)
    assert ops[0] == ("delete", MANIFEST) and ops[-1] == ("write_bytes", MANIFEST)


def test_existing_dataset_needs_replace_or_merge(bucket, tmp_path):
    library.upload_dataset(bucket, folder(tmp_path / "a", {"one": "x", "two": "y"}), "cat")
    before = snapshot(bucket)
    other = folder(tmp_path / "b", {"three": "z"})
    with pytest.raises(DatasetExists) as exc:
        library.upload_dataset(bucket, other, "cat")
    assert "--replace" in exc.value.message and "--merge" in exc.value.message
    assert snapshot(bucket) == before  # nothing lost, nothing added

    merged = library.upload_dataset(bucket, other, "cat", merge=True)
    assert merged.result == "merged" and merged.deleted == 0
    keys = {k.rsplit("/", 1)[1] for k in snapshot(bucket)}
    assert keys == {"one.png", "one.txt", "two.png", "two.txt", "three.png", "three.txt", "dataset.json"}
    files = [f["file"] for f in json.loads(bucket.read_bytes(MANIFEST))["files"]]
    assert files == ["one.png", "three.png", "two.png"]

    replaced = library.upload_dataset(bucket, other, "cat", replace=True)
    assert replaced.result == "replaced" and replaced.deleted == 4
    assert {k.rsplit("/", 1)[1] for k in snapshot(bucket)} == {"three.png", "three.txt", "dataset.json"}
    assert [f["file"] for f in json.loads(bucket.read_bytes(MANIFEST))["files"]] == ["three.png"]


def test_the_same_folder_again_changes_nothing_and_needs_no_flag(bucket, tmp_path):
    src = folder(tmp_path / "a", {"one": "x"})
    library.upload_dataset(bucket, src, "cat")
    before = snapshot(bucket)
    rec = Recorder(bucket)
    out = library.upload_dataset(rec, src, "cat")
    assert out.result == "unchanged" and out.files == 0 and writes(rec) == []
    assert snapshot(bucket) == before


def test_a_prepared_folder_keeps_its_own_manifest(bucket, tmp_path):
    src = folder(tmp_path / "a", {"one": "x"}, manifest={"settings": {"trigger": "ohwx", "lora_type": "style"}})
    library.upload_dataset(bucket, src, "cat")
    assert json.loads(bucket.read_bytes(MANIFEST))["settings"]["trigger"] == "ohwx"
    assert library.describe_dataset(bucket, "cat").lora_type == "style"


def test_another_live_upload_is_named_and_nothing_is_written(bucket, tmp_path):
    with leases.acquire(bucket, LOCK, purpose="uploading /elsewhere to datasets/cat/"):
        with pytest.raises(LockHeld, match="uploading /elsewhere"):
            library.upload_dataset(bucket, folder(tmp_path / "a", {"one": "x"}), "cat")
        assert set(snapshot(bucket)) == {LOCK}


def test_a_writer_that_lost_its_lease_writes_no_manifest(bucket, tmp_path):
    """Another machine takes the lease over mid-upload (ours looked dead): we stop before the
    manifest, and leave the new holder's lease alone."""
    taken = []

    def take_over(op, key):
        if op == "upload_file" and not taken:
            taken.append(True)
            thief = leases.LockInfo("other-host", 1, "eve", "uploading /theirs", 1e12, 1e12)
            gen = bucket.stat(LOCK).generation
            bucket.write_bytes(LOCK, thief.to_bytes(), if_generation_match=gen)

    with pytest.raises(LockHeld, match="eve@other-host"):
        library.upload_dataset(Recorder(bucket, take_over), folder(tmp_path / "a", {"one": "x", "two": "y"}), "cat",
                               workers=1)
    assert not bucket.exists(MANIFEST)
    assert json.loads(bucket.read_bytes(LOCK))["user"] == "eve"
    assert library.describe_dataset(bucket, "cat").complete is False


def test_a_failed_upload_is_finished_by_the_same_command(bucket, tmp_path):
    from tests.contract.storage_contract import CountingStorage

    src = folder(tmp_path / "a", {"one": "x", "two": "y", "three": "z"})
    with pytest.raises(Exception, match="simulated interruption"):
        library.upload_dataset(CountingStorage(bucket, fail_after_uploads=2), src, "cat", workers=1)
    assert not bucket.exists(MANIFEST) and library.list_datasets(bucket)[0].complete is False
    # someone else's folder may not silently finish it ...
    with pytest.raises(DatasetExists, match="incomplete"):
        library.upload_dataset(bucket, folder(tmp_path / "b", {"four": "w"}), "cat")
    # ... but the same folder from this machine does, without a flag
    out = library.upload_dataset(bucket, src, "cat")
    assert out.resumed is True and out.files == 4  # the two that made it are skipped
    assert library.require_trainable(bucket, "cat").images == 3


# ---- complete or not -------------------------------------------------------------------------
def test_incomplete_dataset_is_listed_and_cannot_be_trained_or_downloaded(bucket, tmp_path):
    bucket.write_bytes("datasets/cat/one.png", png(1))
    bucket.write_bytes("datasets/cat/one.txt", b"x")
    bucket.write_bytes("datasets/dog/one.png", png(2))
    bucket.write_bytes("datasets/dog/dataset.json", b"{}")
    listed = {d.name: d.complete for d in library.list_datasets(bucket)}
    assert listed == {"cat": False, "dog": True}
    assert library.describe_dataset(bucket, "cat").to_dict()["complete"] is False
    with pytest.raises(DatasetError, match="not complete"):
        library.require_trainable(bucket, "cat")
    assert library.require_trainable(bucket, "dog").images == 1
    with pytest.raises(DatasetError, match="not complete"):
        library.download_dataset(bucket, "cat", tmp_path / "dl")
    with pytest.raises(ObjectNotFound):
        library.require_trainable(bucket, "ghost")
    bucket.write_bytes(LOCK, b"{}")  # validate may look at whatever is there; the lease never travels
    got = library.download_dataset(bucket, "cat", tmp_path / "dl", require_complete=False)
    assert got.files == 2 and sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["one.png", "one.txt"]


def test_an_unreadable_manifest_is_a_corrupt_record(bucket):
    bucket.write_bytes("datasets/cat/one.png", png(1))
    bucket.write_bytes(MANIFEST, b"[1, 2")
    assert library.describe_dataset(bucket, "cat").complete is False
    with pytest.raises(CorruptRecord, match="cannot be read"):
        library.require_trainable(bucket, "cat")


def test_a_dataset_being_uploaded_shows_up_incomplete(bucket):
    bucket.write_bytes(LOCK, b"{}")
    [d] = library.list_datasets(bucket)
    assert (d.name, d.images, d.complete, d.bytes) == ("cat", 0, False, 0)


# ---- downloads -------------------------------------------------------------------------------
def _dead_partial(folder: Path, name: str) -> Path:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    p = folder / f"{PARTIAL}-{proc.pid}-1.{name}.part"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"half a lora")
    return p


def test_download_lora_keeps_an_identical_file_and_sweeps_dead_partials(bucket, tmp_path):
    from tests.contract.storage_contract import CountingStorage

    bucket.write_bytes("loras/cat.safetensors", b"lora bytes v1")
    dest = tmp_path / "loras"
    stale = _dead_partial(dest, "cat.safetensors")
    counting = CountingStorage(bucket)
    path = library.download_lora(counting, "cat", dest)
    assert path == dest / "cat.safetensors" and path.read_bytes() == b"lora bytes v1"
    assert not stale.exists() and [p.name for p in dest.iterdir()] == ["cat.safetensors"]
    library.download_lora(counting, "cat", dest)
    assert counting.calls["download_file"] == 1  # identical: not fetched again
    bucket.write_bytes("loras/cat.safetensors", b"lora bytes v2, retrained")
    assert library.download_lora(counting, "cat", dest).read_bytes() == b"lora bytes v2, retrained"
    with pytest.raises(ObjectNotFound):
        library.download_lora(bucket, "ghost", dest)
    assert [p.name for p in dest.iterdir()] == ["cat.safetensors"]


def test_every_lora_caller_goes_through_the_one_download(bucket, tmp_path):
    """Await LoRA (runs.fetch_lora) and the Cloud LoRA Loader (library.download_lora) land the
    file at the same place with the same rule, and sweep a killed download's partial."""
    bucket.write_bytes("loras/cat.safetensors", b"lora")
    loras = tmp_path / "models" / "loras"
    target = library.comfy_lora_folder(loras)
    stale = _dead_partial(target, "cat.safetensors")
    loader_name = library_lora_name("lora_cloud/cat.safetensors")  # as Await LoRA outputs it
    assert library.download_lora(bucket, loader_name, target) == target / "cat.safetensors"
    assert not stale.exists()
    stale = _dead_partial(target, "cat.safetensors")
    done = RunStatus(run_id="r1", state=RunState.DONE, lora="loras/cat.safetensors")
    assert fetch_lora(bucket, done, target, "cat") == target / "cat.safetensors"
    assert not stale.exists() and [p.name for p in target.iterdir()] == ["cat.safetensors"]
    with pytest.raises(Exception, match="unexpected LoRA location"):
        fetch_lora(bucket, RunStatus(run_id="r1", state=RunState.DONE, lora="runs/../x.safetensors"), target, "cat")
    # a hostile host's status pointing at another, valid LoRA in the bucket is not followed
    bucket.write_bytes("loras/someone-else.safetensors", b"other")
    with pytest.raises(Exception, match="unexpected LoRA location"):
        fetch_lora(bucket, RunStatus(run_id="r1", state=RunState.DONE, lora="loras/someone-else.safetensors"),
                   target, "cat")


def test_load_images_from_a_dataset_uses_the_one_download(bucket, tmp_path):
    library.upload_dataset(bucket, folder(tmp_path / "a", {"one": "x", "two": "y"}), "cat")
    work = graph.WorkArea(tmp_path / "work")
    images = graph.load_images("dataset", "cat", storage=bucket, work=work)
    assert images.count == 2 and images.prepared  # the manifest came along
    assert not any(p.name.startswith(".lora-cloud") for p in Path(images.folder).iterdir() if p.name != ".lora-cloud-complete")
    bucket.write_bytes("datasets/half/one.png", png(3))
    with pytest.raises(DatasetError, match="not complete"):
        graph.load_images("dataset", "half", storage=bucket, work=work)


async def test_save_dataset_node_refuses_an_existing_dataset_unless_replace(bucket, clean_env, tmp_path):
    lib = App(Settings.load(clean_env), storage=bucket).library  # the App's library, as the node reaches it
    first = folder(tmp_path / "a", {"one": "x"}, manifest={"settings": {"trigger": "ohwx"}})
    await graph.save_dataset(graph.ImageSet(str(first), 1, prepared=True), "cat", library=lib)
    second = folder(tmp_path / "b", {"two": "y"}, manifest={"settings": {"trigger": "sks"}})
    before = snapshot(bucket)
    with pytest.raises(DatasetExists, match="turn on 'replace'"):
        await graph.save_dataset(graph.ImageSet(str(second), 1, prepared=True), "cat", library=lib,
                                 replace_existing=False)
    assert snapshot(bucket) == before
    ref = await graph.save_dataset(graph.ImageSet(str(second), 1, prepared=True), "cat", library=lib)
    assert (ref.images, ref.trigger) == (1, "sks")
    assert {k.rsplit("/", 1)[1] for k in snapshot(bucket)} == {"two.png", "two.txt", "dataset.json"}


def test_lease_holder_identity_is_this_process(bucket, tmp_path):
    seen = []

    def peek(op, key):
        if op == "upload_file" and not seen:
            seen.append(json.loads(bucket.read_bytes(LOCK)))

    src = folder(tmp_path / "a", {"one": "x"})
    library.upload_dataset(Recorder(bucket, peek), src, "cat")
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert seen[0]["data"] == {"source": str(src.resolve()), "mode": None}
    assert layout.dataset_lock_key("cat") == LOCK


def test_a_folder_with_a_broken_manifest_is_refused_before_anything_is_written(bucket, tmp_path):
    src = folder(tmp_path / "a", {"one": "x"})
    (src / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot be read as JSON"):
        library.upload_dataset(bucket, src, "cat")
    assert snapshot(bucket) == {}
