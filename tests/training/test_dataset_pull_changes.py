"""The trainer pulls one version of its dataset or none (worker/dataset_pull.py): a dataset replaced
while it is pulled (a real `upload_dataset(..., replace=True, force=True)` run at the pull's first
download) fails the pull, and the run, with a clear error instead of training on a mix; a
dataset without its manifest (an upload under way or killed) is not pulled at all."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from comfy_lora_cloud.errors import DatasetError
from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.service.library import upload_dataset
from comfy_lora_cloud.storage import LocalStorage, layout
from comfy_lora_cloud.worker.dataset_pull import pull_dataset
from tests.training.test_entrypoint_steps import FakeHub, _trainer
from tests.training.trainer_helpers import read_json, seed_bucket

CHANGED = "changed while this run was pulling it"


class ReplacedAtFirstPull(LocalStorage):
    """The bucket, where someone replaces the dataset the moment the trainer starts downloading it."""

    def __init__(self, root: Path, replace_with: Path, name: str = "cat"):
        super().__init__(root)
        self.replace_with, self.name = replace_with, name
        self._fired = threading.Event()
        self._hook_lock = threading.Lock()

    def download_file(self, key, path, **kw):
        with self._hook_lock:
            fire = key.startswith(layout.dataset_prefix(self.name)) and not self._fired.is_set()
            if fire:
                self._fired.set()
                result = upload_dataset(LocalStorage(self.root), self.replace_with, self.name, replace=True,
                                        force=True)
                assert result.result == "replaced"
        return super().download_file(key, path, **kw)


def folder(root: Path, names: list[str], color: tuple[int, int, int]) -> Path:
    root.mkdir(parents=True)
    for n in names:
        out = io.BytesIO()
        Image.new("RGB", (8, 8), color).save(out, "PNG")
        (root / f"{n}.png").write_bytes(out.getvalue())
        (root / f"{n}.txt").write_text(f"ohwx {n}")
    return root


def test_a_dataset_replaced_mid_pull_fails_the_run_instead_of_training_on_a_mix(tmp_path):
    new = folder(tmp_path / "new", ["00", "01", "02"], (0, 200, 0))  # the same names, other pixels
    storage = ReplacedAtFirstPull(tmp_path / "bucket", new)
    seed_bucket(storage)
    trainer, destroyer = _trainer(tmp_path, storage, FakeHub())
    assert trainer.run() == RunState.FAILED
    status = read_json(storage, "runs/run1/status.json")
    assert CHANGED in status["error"] and "Start the run again" in status["error"]
    assert destroyer.calls == 1 and not storage.list("loras/").objects  # kohya never ran


@pytest.mark.parametrize("new_names", [["00", "01", "02"], ["x0", "x1"]], ids=["rewritten", "removed"])
def test_the_pull_names_the_change_whether_files_were_rewritten_or_removed(tmp_path, new_names):
    storage = ReplacedAtFirstPull(tmp_path / "bucket", folder(tmp_path / "new", new_names, (0, 0, 200)))
    seed_bucket(storage, models=False)
    with pytest.raises(DatasetError, match=CHANGED):
        pull_dataset(storage, "cat", tmp_path / "img", workers=1)


def test_a_dataset_without_its_manifest_is_not_pulled(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    seed_bucket(storage, models=False)
    storage.delete("datasets/cat/dataset.json")  # what an upload under way (or killed) leaves
    with pytest.raises(DatasetError, match="has no dataset.json"):
        pull_dataset(storage, "cat", tmp_path / "img")
    assert not (tmp_path / "img").exists()


def test_an_unchanged_dataset_pulls_as_before(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    seed_bucket(storage, models=False)
    assert pull_dataset(storage, "cat", tmp_path / "img") == ["00.png", "01.png", "02.png"]
