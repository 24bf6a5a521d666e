"""The trainer's steps before kohya, in-process: weights (bucket cache, Hugging Face, gated),
dataset checks, bad presets. Each ends in a status and a destroyed instance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from comfy_lora_cloud.errors import TrainingError
from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.worker.trainer import Trainer
from comfy_lora_cloud.worker.weights import gated_message
from tests.training.trainer_helpers import FAKE_KOHYA, read_json, seed_bucket, small_spec


class FakeHub:
    """A WeightSource: files by repo, gated repos refused, every call recorded."""

    def __init__(self, gated: bool = False):
        self.gated = gated
        self.calls: list[tuple[str, ...]] = []

    def check(self, repo_id: str) -> None:
        self.calls.append(("check", repo_id))
        if self.gated and repo_id == "black-forest-labs/FLUX.1-dev":
            raise TrainingError(gated_message(repo_id))

    def download(self, repo_id: str, filename: str, dest_dir: Path) -> Path:
        self.calls.append(("download", repo_id, filename))
        path = dest_dir / "hub-cache" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"hub:" + filename.encode())
        return path


class Destroyer:
    def __init__(self):
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return True


def _trainer(tmp_path, storage, hub, spec=None):
    spec = spec or small_spec()
    destroyer = Destroyer()
    t = Trainer(spec=spec, storage=storage, workdir=tmp_path / "work", weights=hub, destroy=destroyer,
                launcher=[sys.executable, str(FAKE_KOHYA)], poll_interval=0.05, child_env={"PATH": "/usr/bin:/bin"})
    return t, destroyer


def test_gated_flux_fails_before_the_dataset_is_pulled(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    seed_bucket(storage, models=False)
    hub = FakeHub(gated=True)
    trainer, destroyer = _trainer(tmp_path, storage, hub)

    assert trainer.run() == RunState.FAILED

    status = read_json(storage, "runs/run1/status.json")
    assert "accept the licence" in status["error"] and "huggingface.co/black-forest-labs/FLUX.1-dev" in status["error"]
    assert hub.calls == [("check", "black-forest-labs/FLUX.1-dev")]  # the gated repo first, nothing downloaded
    assert not (tmp_path / "work" / "dataset").exists()
    assert destroyer.calls == 1


def test_hub_downloads_are_cached_in_the_bucket_and_reused(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    seed_bucket(storage, models=False)
    hub = FakeHub()
    trainer, _ = _trainer(tmp_path, storage, hub)
    assert trainer.run() == RunState.DONE
    assert sorted(c[2] for c in hub.calls if c[0] == "download") == [
        "ae.safetensors", "clip_l.safetensors", "flux1-dev.safetensors", "t5xxl_fp16.safetensors"]
    assert storage.read_bytes("models/flux1-dev.safetensors") == b"hub:flux1-dev.safetensors"
    assert (tmp_path / "work" / "models" / "flux1-dev.safetensors").read_bytes() == b"hub:flux1-dev.safetensors"

    hub2 = FakeHub()
    again, _ = _trainer(tmp_path / "second", storage, hub2, small_spec("run2"))
    assert again.run() == RunState.DONE
    assert hub2.calls == []  # everything came from the bucket


def test_missing_captions_fail_with_the_image_names(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    seed_bucket(storage)
    storage.delete("datasets/cat/01.txt")
    storage.write_bytes("datasets/cat/02.txt", b"   \n")
    trainer, destroyer = _trainer(tmp_path, storage, FakeHub())
    assert trainer.run() == RunState.FAILED
    error = read_json(storage, "runs/run1/status.json")["error"]
    assert "2 image(s) have no caption" in error and "01.png" in error and "02.png" in error
    assert destroyer.calls == 1


def test_empty_dataset_fails(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    seed_bucket(storage, images=0)
    trainer, _ = _trainer(tmp_path, storage, FakeHub())
    assert trainer.run() == RunState.FAILED
    assert "no images" in read_json(storage, "runs/run1/status.json")["error"]


def test_bad_override_fails_before_kohya_starts(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    seed_bucket(storage)
    trainer, _ = _trainer(tmp_path, storage, FakeHub(), small_spec(overrides={"resolution": "1024"}))
    assert trainer.run() == RunState.FAILED
    assert "expected int" in read_json(storage, "runs/run1/status.json")["error"]
    assert not (tmp_path / "work" / "kohya.pid").exists()


def test_deadline_already_passed_on_restart_times_out_at_once(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    seed_bucket(storage)
    clock = [1000.0]
    spec = small_spec(max_hours=1.0)
    trainer, _ = _trainer(tmp_path, storage, FakeHub(), spec)
    trainer.clock = lambda: clock[0]
    trainer.report.clock = trainer.clock
    trainer.report.update(state=RunState.STARTING)  # a first attempt started at t=1000
    trainer.report.update(state=RunState.TRAINING)
    clock[0] += 3601  # the instance was lost and a new one comes up after the limit
    again, destroyer = _trainer(tmp_path, storage, FakeHub(), spec)
    again.clock = again.report.clock = lambda: clock[0]
    assert again.run() == RunState.TIMED_OUT
    assert "limit of 1 h" in read_json(storage, "runs/run1/status.json")["error"]
    assert destroyer.calls == 1


@pytest.mark.parametrize("field,value", [("lora_type", "anime"), ("run_id", "../x"), ("max_hours", 0)])
def test_invalid_spec_is_refused(field, value):
    from comfy_lora_cloud.errors import ConfigError

    with pytest.raises(ConfigError):
        small_spec(**{field: value})


class FlakyCheckpoints(LocalStorage):
    """Local storage whose first checkpoint uploads fail, as a bucket having a bad minute."""

    def __init__(self, root, failures: int):
        super().__init__(root)
        self.failures = failures

    def upload_file(self, path, key, **kw):
        if "/checkpoints/" in key and self.failures > 0:
            self.failures -= 1
            from comfy_lora_cloud.errors import StorageError

            raise StorageError("503 backend error")
        return super().upload_file(path, key, **kw)


def test_failed_checkpoint_upload_is_retried_and_the_run_goes_on(tmp_path):
    storage = FlakyCheckpoints(tmp_path / "b", failures=2)
    seed_bucket(storage)
    trainer, _ = _trainer(tmp_path, storage, FakeHub())
    assert trainer.run() == RunState.DONE
    assert storage.failures == 0
    assert read_json(storage, "runs/run1/checkpoints/latest.json")["epoch"] == 3


class RacingStorage(LocalStorage):
    """Another run publishes loras/cat.safetensors just before this one does."""

    def upload_file(self, path, key, **kw):
        if key == "loras/cat.safetensors" and not self.exists(key):
            self.write_bytes(key, b"the other run's LoRA")
        return super().upload_file(path, key, **kw)


def test_a_lora_published_meanwhile_by_another_run_is_not_overwritten(tmp_path):
    storage = RacingStorage(tmp_path / "b")
    seed_bucket(storage)
    trainer, _ = _trainer(tmp_path, storage, FakeHub())
    assert trainer.run() == RunState.DONE
    assert storage.read_bytes("loras/cat.safetensors") == b"the other run's LoRA"
    assert read_json(storage, "runs/run1/status.json")["lora"] == "loras/cat-run1.safetensors"


class CorruptingStorage(LocalStorage):
    """Stores different bytes than it was given for LoRAs, as a broken transfer would."""

    def __init__(self, root, corrupt: int = 99):
        super().__init__(root)
        self.corrupt = corrupt

    def upload_file(self, path, key, **kw):
        if key.startswith("loras/") and self.corrupt > 0:
            self.corrupt -= 1
            kw.pop("checksums", None)
            return self.write_bytes(key, Path(path).read_bytes()[:-1] + b"X")
        return super().upload_file(path, key, **kw)


def test_a_corrupted_lora_upload_fails_the_run_instead_of_reporting_done(tmp_path):
    storage = CorruptingStorage(tmp_path / "b")
    seed_bucket(storage)
    trainer, destroyer = _trainer(tmp_path, storage, FakeHub())
    assert trainer.run() == RunState.FAILED
    status = read_json(storage, "runs/run1/status.json")
    assert "does not match the trained file" in status["error"] and status["lora"] is None
    events = [json.loads(line) for line in storage.read_bytes("runs/run1/events.jsonl").decode().splitlines()]
    assert [e["attempt"] for e in events if e["kind"] == "upload_retry"] == [1, 2, 3]
    assert not storage.exists("loras/cat.json")
    assert destroyer.calls == 1


def test_a_corrupted_lora_upload_is_retried(tmp_path):
    storage = CorruptingStorage(tmp_path / "b", corrupt=1)
    seed_bucket(storage)
    trainer, _ = _trainer(tmp_path, storage, FakeHub())
    assert trainer.run() == RunState.DONE
    local = (tmp_path / "work" / "output" / "cat.safetensors").read_bytes()
    assert storage.read_bytes("loras/cat.safetensors") == local
