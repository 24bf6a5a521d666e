"""A retry of a launch whose controller was killed between the intent and the create call: it
must not attach to the dead start (``"attached": true, "instance_id": null`` rented nothing and
waited for nothing); it ends that run FAILED and starts afresh. A launch that died after its
create call is attached to through the instance its label finds. Against the fake vast.ai server
and the GCS emulator, through the CLI, with a real SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.cli.main import app
from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.providers.base import LaunchSpec, OfferRequest, bucket_tag, run_label
from comfy_lora_cloud.providers.vast import VastClient, VastProvider
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.storage.identity import read_bucket_id
from comfy_lora_cloud.training.status import read_status
from tests.fakes.vast.server import FakeVast
from tests.training.trainer_helpers import HF_TOKEN, seed_bucket

VAST_KEY = "vast-account-key-0123456789abcdef"
SA_JSON = '{"type": "service_account", "client_email": "t@p.iam.gserviceaccount.com"}'
REPO = Path(__file__).resolve().parents[2]
START = ("--dataset", "cat", "--gpu", "4090", "--trigger", "ohwx cat")


@pytest.fixture
def setup(gcs_bucket, monkeypatch, tmp_path):
    fake = FakeVast(VAST_KEY, created_s=0.1, loading_s=0.2, workdir=tmp_path / "instances")
    url = fake.start_in_thread()
    storage_url = f"gs://{gcs_bucket}/lc"
    for k, v in {"LORA_CLOUD_STORAGE": storage_url, "LORA_CLOUD_VAST_URL": url, "LORA_CLOUD_VAST_API_KEY": VAST_KEY,
                 "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON, "LORA_CLOUD_MAX_RUN_USD": "50",
                 "HF_TOKEN": HF_TOKEN}.items():
        monkeypatch.setenv(k, v)
    storage = open_storage(storage_url)
    seed_bucket(storage, images=10, models=False)
    yield fake, storage
    fake.stop()


def _start() -> dict:
    r = CliRunner().invoke(app, ["--json", "train", "start", *START], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _killed_start() -> str:
    """``train start`` in a process killed between the intent and the create call; the run id."""
    proc = subprocess.run([sys.executable, "-m", "tests.service.launch_killer", *START], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "STEP intent_recorded" in proc.stdout, proc.stdout + proc.stderr
    [run] = StateStore(Settings.load().state_db).list_runs()
    assert run.state is RunState.LAUNCHING and run.instance_id is None
    return run.id


def test_a_retry_after_a_launch_killed_before_its_create_starts_afresh(setup):
    fake, storage = setup
    dead = _killed_start()
    assert fake.state.created_count == 0
    # its id says which bucket it lives in
    assert bucket_tag(dead) == read_bucket_id(storage)

    again = _start()  # at once: the launching process is gone, so no waiting out a window
    assert again["attached"] is False and again["instance_id"] is not None and again["run_id"] != dead
    assert fake.state.created_count == 1
    assert fake.state.get(int(again["instance_id"])).label == run_label(again["run_id"])
    state = StateStore(Settings.load().state_db)
    assert state.get_run(dead).state is RunState.FAILED and "interrupted" in state.get_run(dead).error
    assert read_status(storage, dead).state is RunState.FAILED  # every home sees the dead start ended

    # and a retry of that one attaches to it, with its instance
    third = _start()
    assert third["attached"] is True and third["run_id"] == again["run_id"]
    assert third["instance_id"] == again["instance_id"] and fake.state.created_count == 1


def test_a_retry_after_a_launch_killed_on_another_machine_waits_out_the_window(setup):
    """The launching process cannot be looked up (another host): the intent is dead once it is
    older than the launch window."""
    fake, storage = setup
    dead = _killed_start()
    state = StateStore(Settings.load().state_db)
    run = state.get_run(dead)
    state.update_run(dead, spec={**run.spec, "launcher": {"host": "another-laptop", "pid": 1}})
    with state.transaction() as conn:  # its last step, 3 minutes ago
        conn.execute("UPDATE runs SET updated_at = updated_at - 180 WHERE id = ?", (dead,))
    again = _start()
    assert again["attached"] is False and again["instance_id"] is not None
    assert state.get_run(dead).state is RunState.FAILED


def test_a_retry_after_a_launch_killed_after_its_create_attaches_to_that_instance(setup):
    """Killed between the create call and recording it: the retry finds the instance by its label
    and attaches to it (rented once, never twice)."""
    fake, storage = setup
    dead = _killed_start()

    async def created():  # the create call that did get through before the kill
        async with VastClient(fake.url, VAST_KEY) as client:
            provider = VastProvider(client)
            offer = min(await provider.search(OfferRequest(min_vram_gb=24)), key=lambda o: o.dph_total)
            return await provider.launch(offer, LaunchSpec(image="trainer", label=run_label(dead)))

    inst = asyncio.run(created())
    again = _start()
    assert again["attached"] is True and again["run_id"] == dead and again["instance_id"] == str(inst.id)
    assert fake.state.created_count == 1
