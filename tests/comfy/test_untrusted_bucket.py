"""Bucket content is untrusted input (a rented host holds a key that writes it): every reader skips
what it cannot read and says so, in the routes, the service, the status protocol and the CLI."""

from __future__ import annotations

import json

import pytest

from comfy_lora_cloud.comfy.routes import PREFIX
from comfy_lora_cloud.errors import CorruptRecord, StorageError
from comfy_lora_cloud.models import RunState, RunStatus
from comfy_lora_cloud.service import library
from comfy_lora_cloud.storage import layout
from comfy_lora_cloud.training.status import StatusReporter, read_events, read_status

from tests.comfy import hostile
from tests.comfy.conftest import NOW

A = PREFIX


@pytest.mark.parametrize("run_id", sorted(hostile.BAD_STATUSES))
def test_read_status_refuses_what_a_trainer_would_not_write(seeded, run_id):
    hostile.put(seeded.storage.root, f"runs/{run_id}/status.json", hostile.BAD_STATUSES[run_id])
    with pytest.raises(CorruptRecord):
        read_status(seeded.storage, run_id)


def test_what_the_trainer_writes_reads_back(seeded):
    reporter = StatusReporter(seeded.storage, "run-9", clock=lambda: NOW)
    reporter.update(state=RunState.TRAINING, step=5, total_steps=10, loss=0.5, eta_seconds=12.5, message="ok")
    reporter.update(state=RunState.DONE, lora="loras/x.safetensors", eta_seconds=None)
    status = read_status(seeded.storage, "run-9")
    assert (status.state, status.step, status.loss, status.lora) == (RunState.DONE, 5, 0.5, "loras/x.safetensors")


def test_events_keep_only_events(seeded):
    hostile.write_hostile_bucket(seeded.storage.root)
    assert read_events(seeded.storage, "run-1") == [{"t": 1, "kind": "state", "state": "training"}]


async def test_listings_report_problems_and_keep_the_rest(comfy_client, seeded):
    hostile.write_hostile_bucket(seeded.storage.root)
    datasets = await (await comfy_client.get(f"{A}/datasets")).json()
    by_name = {d["name"]: d for d in datasets["datasets"]}
    assert by_name["cats"]["trigger"] == "sks" and by_name["cats"]["images"] == 7  # 2 photos + 5 hostile "images"
    assert by_name["ds-list"]["trigger"] is None and by_name["ds-list"]["images"] == 1  # still a dataset
    problems = {p["entry"]: p["message"] for p in datasets["problems"]}
    assert "letters, digits" in problems["datasets/caf\u200be/"]  # a zero-width space is not a letter
    assert "not a JSON object" in problems["datasets/ds-list/dataset.json"]
    assert "trigger" in problems["datasets/ds-multiline/dataset.json"]

    runs = await (await comfy_client.get(f"{A}/runs")).json()
    assert [r["id"] for r in runs["runs"]] == ["run-1"] and runs["runs"][0]["step"] == 250
    problems = {p["entry"]: p["message"] for p in runs["problems"]}
    assert "unknown state" in problems["runs/r-state/status.json"]
    assert "not a count" in problems["runs/r-step/status.json"]
    assert "bytes, more than a record may be" in problems["runs/r-huge/status.json"]
    assert "it names run 'run-1'" in problems["runs/r-other/status.json"]
    assert "runs/bad run!/" in problems

    loras = await (await comfy_client.get(f"{A}/loras")).json()
    assert sorted(lo["name"] for lo in loras["loras"]) == ["cat-v1", "deep-header", "huge-header", "side-list"]
    assert {p["entry"] for p in loras["problems"]} == {
        "loras/<script>.safetensors", "loras/bad name!.safetensors", "loras/side-list.json"}

    images = (await (await comfy_client.get(f"{A}/datasets/cats/images")).json())["images"]
    assert {i["file"]: i["caption"] for i in images}["page.png"] is None  # a 200 KB "caption" is not read


async def test_a_run_launched_here_with_a_corrupt_status_still_shows(comfy_client, seeded):
    hostile.put(seeded.storage.root, "runs/run-1/status.json", "[]")
    runs = await (await comfy_client.get(f"{A}/runs")).json()
    [run] = runs["runs"]
    assert run["id"] == "run-1" and run["status"] is None and run["state"] == "training"  # the store's word
    assert runs["problems"][0]["entry"] == "runs/run-1/status.json"
    detail = await comfy_client.get(f"{A}/runs/run-1")
    assert detail.status == 200 and (await detail.json())["status"] is None


def test_manifest_and_sidecar_readers_refuse_wrong_shapes(seeded):
    hostile.write_hostile_bucket(seeded.storage.root)
    found = library.list_datasets(seeded.storage)
    assert {d.name for d in found.items} >= {"cats", *hostile.BAD_MANIFESTS}
    assert all(d.trigger is None for d in found.items if d.name in hostile.BAD_MANIFESTS)
    with pytest.raises(StorageError):
        library.read_lora_sidecar(seeded.storage, "loras/side-list.json")
    assert library.describe_dataset(seeded.storage, "ds-type").lora_type is None  # never "<img ...>"


def test_cli_status_lists_the_good_runs_and_warns_about_the_rest(seeded, monkeypatch):
    from typer.testing import CliRunner

    from comfy_lora_cloud.cli.main import app

    hostile.write_hostile_bucket(seeded.storage.root)
    good = RunStatus(run_id="run-2", state=RunState.DONE, step=3, total_steps=3, updated_at=NOW)
    seeded.storage.write_bytes(layout.run_key("run-2", "status.json"), json.dumps(good.to_dict()).encode())
    monkeypatch.setenv("LORA_CLOUD_STORAGE", str(seeded.storage.root))
    result = CliRunner().invoke(app, ["--json", "train", "status"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["run_id"] for r in rows) == ["run-1", "run-2"]
    assert "skipped runs/r-state/" in result.stderr
