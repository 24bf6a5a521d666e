"""The trainer's checkpoint and sample pushes go through the sync engine (one transfer
path): files in parallel, each verified, read once; what a failed try landed is not sent again."""

from __future__ import annotations

import json
import threading

from comfy_lora_cloud.errors import StorageError
from comfy_lora_cloud.storage import hash_cache, sync
from comfy_lora_cloud.storage.base import checksum_file
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.status import StatusReporter
from comfy_lora_cloud.worker.checkpoints import download_checkpoint, read_latest, upload_checkpoint

STATE = {"model.safetensors": b"m" * 5000, "optimizer.bin": b"o" * 3000, "random_states_0.pkl": b"r" * 40,
         "scheduler.bin": b"s" * 80, "train_state.json": b'{"current_epoch": 2}'}


class Uploads(LocalStorage):
    """Counts uploads; ``fail`` keys refuse once; ``meet``: the first that many uploads wait
    until they are all inside at once."""

    def __init__(self, root, fail=(), meet: int = 0):
        super().__init__(root)
        self.fail = set(fail)
        self.sent: list[str] = []
        self.meet = threading.Barrier(meet) if meet else None
        self._arrived = 0
        self._lock = threading.Lock()

    def upload_file(self, path, key, **kw):
        with self._lock:
            self._arrived += 1
            wait = self.meet is not None and self._arrived <= self.meet.parties
        if wait:
            self.meet.wait(timeout=30)
        if key in self.fail:
            self.fail.discard(key)
            raise StorageError("503 backend error")
        self.sent.append(key)
        return super().upload_file(path, key, **kw)


def state_dir(tmp_path):
    d = tmp_path / "out" / "cat-000002-state"
    d.mkdir(parents=True)
    for name, data in STATE.items():
        (d / name).write_bytes(data)
    return d


def test_a_checkpoint_goes_up_in_parallel_and_each_file_is_read_once(tmp_path, monkeypatch):
    d = state_dir(tmp_path)
    storage = Uploads(tmp_path / "bucket", meet=4)  # four uploads inside at once, or the barrier breaks
    hashed = []
    real = hash_cache.checksum_file
    monkeypatch.setattr(hash_cache, "checksum_file", lambda p: hashed.append(p) or real(p))
    cp = upload_checkpoint(storage, "run1", d, epoch=2, step=12, workers=4)
    assert sorted(storage.sent) == sorted(f"runs/run1/checkpoints/{d.name}/{n}" for n in STATE)
    assert hashed == []  # the manifest's md5s are what the uploads hashed
    assert cp.files == {n: {"size": len(b), "md5": checksum_file(d / n).md5} for n, b in STATE.items()}
    assert read_latest(storage, "run1") == cp
    back = download_checkpoint(storage, "run1", cp, tmp_path / "resume")
    assert {p.name: p.read_bytes() for p in back.iterdir()} == STATE


def test_a_failed_checkpoint_push_is_finished_by_the_next_without_resending(tmp_path):
    d = state_dir(tmp_path)
    prefix = f"runs/run1/checkpoints/{d.name}/"
    storage = Uploads(tmp_path / "bucket", fail={prefix + "scheduler.bin"})
    try:
        upload_checkpoint(storage, "run1", d, epoch=2, step=12, workers=1)  # one at a time: in name order
        raise AssertionError("the refused file must fail the push")
    except StorageError:
        pass
    assert read_latest(storage, "run1") is None  # no manifest names a torn checkpoint
    first = list(storage.sent)
    assert first == [prefix + n for n in ("model.safetensors", "optimizer.bin", "random_states_0.pkl")]
    upload_checkpoint(storage, "run1", d, epoch=2, step=12, workers=1)
    assert storage.sent[len(first):] == [prefix + "scheduler.bin", prefix + "train_state.json"]
    assert read_latest(storage, "run1").epoch == 2


def test_samples_go_up_together_and_a_refused_one_waits_for_the_next_poll(tmp_path):
    samples = tmp_path / "sample"
    samples.mkdir()
    paths = []
    for i in range(4):
        p = samples / f"cat_e00000{i}_00.png"
        p.write_bytes(b"png%d" % i)
        paths.append(p)
    storage = Uploads(tmp_path / "bucket", fail={"runs/run1/samples/cat_e000002_00.png"})
    report = StatusReporter(storage, "run1", min_interval=0)
    landed = report.upload_samples(paths, workers=1)
    assert landed == ["cat_e000000_00.png", "cat_e000001_00.png"]  # stopped at the refused one
    assert [e["key"] for e in report.events if e["kind"] == "sample"] == [
        "runs/run1/samples/cat_e000000_00.png", "runs/run1/samples/cat_e000001_00.png"]
    rest = [p for p in paths if p.name not in landed]
    assert report.upload_samples(rest) == ["cat_e000002_00.png", "cat_e000003_00.png"]
    assert [storage.read_bytes(f"runs/run1/samples/{p.name}") for p in paths] == [p.read_bytes() for p in paths]
    assert json.loads(json.dumps(report.events))  # events stay JSON
