"""``--force`` wherever a dataset can be replaced (service/library/dataset_use.py:require_unused): ``dataset
prepare --replace`` and the Save Dataset node's ``force`` input (service/graph.py:save_dataset)
refuse a dataset a live run trains on, and change it when forced. ``dataset upload`` and the
refusal itself: tests/service/test_dataset_in_use.py; the sidebar's publish route:
tests/comfy/test_dataset_force_routes.py."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from comfy_lora_cloud.errors import DatasetInUse
from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.service import graph
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.settings import Settings
from tests.cli.conftest import Cli
from tests.service.test_dataset_in_use import bucket, objects, run_on  # noqa: F401  (bucket: a fixture)
from tests.training.test_dataset_pull_changes import folder


def test_prepare_replace_is_refused_under_a_live_run_before_any_work_and_forced_with_force(bucket, clean_env,
                                                                                          tmp_path):
    run_on(bucket, "r1", "cats", RunState.TRAINING)
    cli = Cli({**os.environ, "LORA_CLOUD_HOME": str(clean_env), "COLUMNS": "200"})
    photos = tmp_path / "photos"
    photos.mkdir()
    for n, color in (("c", (0, 200, 0)), ("d", (0, 0, 200))):
        Image.new("RGB", (320, 256), color).save(photos / f"{n}.png")
    before = objects(bucket)
    args = ("dataset", "prepare", str(photos), "--name", "cats", "--replace", "--trigger", "ohwx",
            "--resolution", "256", "--workers", "1")
    proc = cli(*args, check=6)
    assert "is used by live run r1 (training)" in proc.stderr and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr and objects(bucket) == before
    out = json.loads(cli("--json", *args, "--force").stdout)
    assert out["images"] == 2
    assert sorted(o.key for o in bucket.list("datasets/cats/").objects if o.key.endswith(".txt")) == [
        "datasets/cats/c.txt", "datasets/cats/d.txt"]  # exactly the prepared photos now


async def test_the_save_dataset_node_refuses_unless_its_force_input_is_on(bucket, clean_env, tmp_path):
    run_on(bucket, "r1", "cats", RunState.PREEMPTED)  # it pulls the dataset again when it moves
    new = folder(tmp_path / "new", ["c"], (0, 0, 200))
    images = graph.ImageSet(str(new), 1, prepared=True)
    library = App(Settings.load(clean_env), storage=bucket).library  # the App the node reaches
    before = objects(bucket)
    with pytest.raises(DatasetInUse, match=r"used by live run r1 \(preempted\)") as refused:
        await graph.save_dataset(images, "cats", library=library)  # the node's defaults: replace on, force off
    assert refused.value.details["runs"] == ["r1"] and objects(bucket) == before
    ref = await graph.save_dataset(images, "cats", library=library, force=True)
    assert ref.name == "cats" and ref.images == 1
