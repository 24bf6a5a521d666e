"""`lora-cloud train start/stop --provider vast` against the fake vast.ai server and the GCS
emulator: what the instance is created with (image, label, environment, on-start command) and
what the controller records. The trainer itself is not run here (test_cli_start_stop.py runs it
on the local provider)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.cli.main import app
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.training.status import read_status
from tests.fakes.vast.server import FakeVast
from tests.training.trainer_helpers import HF_TOKEN, seed_bucket

VAST_KEY = "vast-account-key-0123456789abcdef"
SA_JSON = '{"type": "service_account", "client_email": "t@p.iam.gserviceaccount.com"}'


@pytest.fixture
def setup(gcs_bucket, monkeypatch, tmp_path):
    fake = FakeVast(VAST_KEY, created_s=0.1, loading_s=0.2, workdir=tmp_path / "instances")
    url = fake.start_in_thread()
    storage_url = f"gs://{gcs_bucket}/lc"
    for k, v in {"LORA_CLOUD_STORAGE": storage_url, "LORA_CLOUD_VAST_URL": url, "LORA_CLOUD_VAST_API_KEY": VAST_KEY,
                 "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON, "LORA_CLOUD_MAX_RUN_USD": "50"}.items():
        monkeypatch.setenv(k, v)
    storage = open_storage(storage_url)
    seed_bucket(storage, images=10, models=False)
    yield fake, storage
    fake.stop()


def _invoke(*args):
    return CliRunner().invoke(app, ["--json", *args], catch_exceptions=False)


def test_start_creates_one_labelled_instance_with_the_narrowest_env(setup, monkeypatch):
    fake, storage = setup
    r = _invoke("train", "start", "--dataset", "cat", "--gpu", "4090")
    assert r.exit_code == 2 and "Hugging Face token" in r.output  # no weights in the bucket, no token
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)

    r = _invoke("train", "start", "--dataset", "cat", "--gpu", "4090", "--trigger", "ohwx cat")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    run_id, iid = data["run_id"], int(data["instance_id"])
    inst = fake.state.get(iid)
    assert inst.label == f"lora-cloud:{run_id}"  # the run id and nothing else
    assert inst.image == Settings.load().trainer_image and inst.runtype == "ssh"
    assert inst.onstart == 'python -m comfy_lora_cloud.worker.entrypoint --workdir "${LORA_CLOUD_WORKDIR:-$PWD}"'
    assert inst.env == {"LORA_CLOUD_STORAGE": storage.url, "LORA_CLOUD_RUN_ID": run_id,
                        "LORA_CLOUD_VAST_URL": Settings.load().vast_url, "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON,
                        "HF_TOKEN": HF_TOKEN}
    assert VAST_KEY not in json.dumps(inst.env) and inst.offer["gpu_name"] == "RTX 4090"
    spec = json.loads(storage.read_bytes(f"runs/{run_id}/spec.json"))
    assert spec["trigger"] == "ohwx cat" and spec["vram_gb"] == 24 and HF_TOKEN not in json.dumps(spec)
    assert read_status(storage, run_id).state.value == "launching"
    run = StateStore(Settings.load().state_db).get_run(run_id)
    assert (run.instance_id, run.gpu, run.provider) == (str(iid), "RTX 4090", "vast")

    # the same graph queued again: no second instance
    again = json.loads(_invoke("train", "start", "--dataset", "cat", "--gpu", "4090", "--trigger", "ohwx cat").stdout)
    assert again["attached"] is True and again["run_id"] == run_id
    assert fake.state.created_count == 1

    # cached weights: the next run gets no Hugging Face token
    from comfy_lora_cloud.training.kohya_config import MODEL_FILES

    for filename, _ in MODEL_FILES.values():
        storage.write_bytes(f"models/{filename}", b"w")
    other = json.loads(_invoke("train", "start", "--dataset", "cat", "--gpu", "4090", "--type", "concept").stdout)
    assert "HF_TOKEN" not in fake.state.get(int(other["instance_id"])).env

    r = _invoke("train", "stop", run_id)
    assert r.exit_code == 0 and json.loads(r.stdout)["destroyed"] is True
    assert fake.state.get(iid) is None
    assert read_status(storage, run_id).state.value == "stopped"


def test_budget_refuses_an_expensive_run_before_renting(setup, monkeypatch):
    fake, storage = setup
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("LORA_CLOUD_MAX_RUN_USD", "0.01")
    r = _invoke("train", "start", "--dataset", "cat", "--gpu", "4090")
    assert r.exit_code == 4 and "per-run budget" in r.output
    assert fake.state.created_count == 0


def test_plan_live_names_the_offer_the_picker_would_rent(setup, tmp_path):
    fake, _storage = setup
    r = _invoke("train", "plan", "--dataset", "cat", "--type", "character", "--live", "--out", str(tmp_path / "p"))
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    offer = data["offer"]
    assert offer["best"]["gpu"] and offer["explanation"].startswith("picked offer")
    assert offer["best"]["dph_total"] <= Settings.load().max_dph
    assert fake.state.created_count == 0 and (tmp_path / "p" / "train.toml").is_file()  # nothing rented
