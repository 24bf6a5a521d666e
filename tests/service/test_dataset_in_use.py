"""A dataset a live run trains on is not replaced or merged into unless forced
(service/library/dataset_use.py, called by service/library/datasets.py:upload_dataset): the runs in the bucket's
runs/ are the witness, whichever machine launched them. The trainer's side (a pull that notices
a change) is tests/training/test_dataset_pull_changes.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from comfy_lora_cloud.errors import DatasetInUse
from comfy_lora_cloud.models import RunState, RunStatus
from comfy_lora_cloud.service.library.dataset_use import DatasetUser, live_runs_using
from comfy_lora_cloud.service.library import upload_dataset
from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.storage.layout import run_key
from comfy_lora_cloud.training.spec import RunSpec
from tests.cli.conftest import Cli
from tests.training.test_dataset_pull_changes import folder


def run_on(storage, run_id: str, dataset: str, state: RunState | None = None, *, status: bytes | None = None) -> None:
    """A run as a launch leaves it in the bucket: its spec, and the status its trainer reports."""
    RunSpec(run_id=run_id, dataset=dataset, lora_type="character", lora_name=run_id).save(storage)
    if state is not None:
        status = json.dumps(RunStatus(run_id=run_id, state=state, updated_at=time.time()).to_dict()).encode()
    if status is not None:
        storage.write_bytes(run_key(run_id, "status.json"), status)


def objects(storage) -> dict[str, str]:
    return {o.key: o.md5 for o in storage.list("").objects}


@pytest.fixture
def bucket(clean_env, tmp_path) -> LocalStorage:
    storage = LocalStorage(clean_env / "bucket")
    upload_dataset(storage, folder(tmp_path / "old", ["a", "b"], (200, 0, 0)), "cats")
    return storage


def test_the_live_runs_of_a_dataset_are_the_ones_that_have_not_ended(bucket):
    run_on(bucket, "training", "cats", RunState.TRAINING)
    run_on(bucket, "preempted", "cats", RunState.PREEMPTED)  # it pulls the dataset again when it moves
    run_on(bucket, "done", "cats", RunState.DONE)
    run_on(bucket, "failed", "cats", RunState.FAILED)
    run_on(bucket, "other", "dogs", RunState.TRAINING)
    run_on(bucket, "launching", "cats")  # no status yet: a launch under way
    run_on(bucket, "abandoned", "cats")  # no status, spec two hours old: a launch that died
    spec = bucket.root / "runs" / "abandoned" / "spec.json"
    os.utime(spec, (time.time() - 7200, time.time() - 7200))
    run_on(bucket, "garbled", "cats", status=b"{not json")  # cannot tell: counts
    bucket.write_bytes(run_key("junk", "spec.json"), b"[1, 2")  # names no dataset
    assert live_runs_using(bucket, "cats") == [
        DatasetUser("garbled", "unreadable status"), DatasetUser("launching", "launching"),
        DatasetUser("preempted", "preempted"), DatasetUser("training", "training")]
    assert live_runs_using(bucket, "dogs") == [DatasetUser("other", "training")]
    assert live_runs_using(bucket, "birds") == []


@pytest.mark.parametrize("mode", ["replace", "merge"])
def test_replace_and_merge_are_refused_under_a_live_run_and_change_nothing(bucket, tmp_path, mode):
    run_on(bucket, "r1", "cats", RunState.TRAINING)
    before = objects(bucket)
    new = folder(tmp_path / "new", ["c"], (0, 200, 0))
    with pytest.raises(DatasetInUse, match=r"used by live run r1 \(training\).*train stop r1.*--force"):
        upload_dataset(bucket, new, "cats", **{mode: True})
    assert objects(bucket) == before  # not a file, not the manifest, no lease left behind
    out = upload_dataset(bucket, new, "cats", force=True, **{mode: True})
    assert out.result == {"replace": "replaced", "merge": "merged"}[mode]


def test_an_ended_run_or_the_same_files_again_need_no_force(bucket, tmp_path):
    run_on(bucket, "r1", "cats", RunState.TRAINING)
    assert upload_dataset(bucket, tmp_path / "old", "cats").result == "unchanged"  # nothing would change
    run_on(bucket, "r1", "cats", RunState.DONE)
    assert upload_dataset(bucket, folder(tmp_path / "new", ["c"], (0, 0, 9)), "cats", replace=True).result == \
        "replaced"


def test_the_cli_refuses_with_exit_6_and_says_how_to_go_on(bucket, clean_env, tmp_path):
    run_on(bucket, "r1", "cats", RunState.TRAINING)
    cli = Cli({**os.environ, "LORA_CLOUD_HOME": str(clean_env), "COLUMNS": "200"})
    new = folder(tmp_path / "new", ["c"], (0, 200, 0))
    before = objects(bucket)
    proc = cli("dataset", "upload", str(new), "--name", "cats", "--replace", check=6)
    assert "is used by live run r1 (training)" in proc.stderr and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr and objects(bucket) == before
    err = json.loads(cli("--json", "dataset", "upload", str(new), "--name", "cats", "--replace", check=6).stdout)
    assert err["error"] == "DatasetInUse" and err["exit_code"] == 6
    out = cli.json("dataset", "upload", str(new), "--name", "cats", "--replace", "--force")
    assert out["result"] == "replaced" and sorted(o.key for o in bucket.list("datasets/cats/").objects) == [
        "datasets/cats/c.png", "datasets/cats/c.txt", "datasets/cats/dataset.json"]
