"""A launch records the limits it runs under, and `lora-cloud train stop` ends a run whose
``status.json`` a host damaged, against the fake vast.ai server and the GCS emulator."""

from __future__ import annotations

import json

from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.training.launch import config_hash
from comfy_lora_cloud.training.spec import RunSpec, read_limits
from comfy_lora_cloud.training.status import read_events, read_status
from tests.training.test_cli_start_vast import _invoke, setup  # noqa: F401 - the fixture
from tests.training.trainer_helpers import HF_TOKEN


def test_a_launch_records_its_limits_and_keeps_its_config_hash(setup, monkeypatch):  # noqa: F811
    fake, storage = setup
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("LORA_CLOUD_MAX_DPH", "3")
    r = _invoke("train", "start", "--dataset", "cat", "--gpu", "4090")
    assert r.exit_code == 0, r.output
    run_id = json.loads(r.stdout)["run_id"]
    spec = json.loads(storage.read_bytes(f"runs/{run_id}/spec.json"))
    assert spec["limits"] == {"max_dph": 3.0, "max_run_usd": 50.0, "max_hours": 6.0}
    limits = read_limits(storage, run_id)
    assert (limits.max_dph, limits.max_run_usd, limits.max_hours) == (3.0, 50.0, 6.0)
    # the limits are no training choice: the same run without them hashes the same
    run = StateStore(Settings.load().state_db).get_run(run_id)
    bare = RunSpec.from_dict({**spec, "limits": None, "run_id": "other"})
    assert config_hash(bare, storage) == run.config_hash


def test_stop_ends_a_run_whose_status_is_damaged(setup, monkeypatch):  # noqa: F811
    fake, storage = setup
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    r = _invoke("train", "start", "--dataset", "cat", "--gpu", "4090")
    assert r.exit_code == 0, r.output
    started = json.loads(r.stdout)
    run_id, iid = started["run_id"], int(started["instance_id"])
    storage.write_bytes(f"runs/{run_id}/status.json", b'{"run_id": "' + run_id.encode() + b'", "state": "trai')

    r = _invoke("train", "stop", run_id)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["destroyed"] is True and fake.state.get(iid) is None
    status = read_status(storage, run_id)  # replaced by a valid one: every reader sees the end
    assert status.state is RunState.STOPPED and status.message == "stopped by the user"
    ends = [e for e in read_events(storage, run_id) if e["kind"] == "state" and e.get("state") == "stopped"]
    assert len(ends) == 1
    assert StateStore(Settings.load().state_db).get_run(run_id).state is RunState.STOPPED
