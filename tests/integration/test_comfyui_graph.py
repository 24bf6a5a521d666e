"""Opt-in: the photos -> LoRA graph queued through a real ComfyUI.

ComfyUI (../shared/tools/comfyui-harness.sh) runs our nodes against the GCS emulator and the fake
vast.ai server, whose instance runs the real trainer entrypoint (kohya swapped for
tests/fakes/fake_kohya.py). Checks: /prompt accepts the whole workflow of
example_workflows/dataset_to_lora.json; the dataset part of it, queued, ends with the LoRA in
models/loras/lora_cloud/ with the bucket's checksum and no instance left; queued again, nothing
new is rented.

Needs LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR (a git directory holding Comfy-Org/ComfyUI).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.gcs_emulator import start_emulator, stop_emulator
from tests.training.trainer_helpers import FAKE_KOHYA, seed_bucket

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "tools"
COMFY_DIR = Path(os.environ.get("COMFY_DIR", "/tmp/ComfyUI"))
KEY = "vast-key-comfyui-graph-0123456789"
SA_JSON = '{"type": "service_account", "client_email": "t@p.iam.gserviceaccount.com"}'

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(os.environ.get("LORA_CLOUD_TEST_COMFYUI") != "1",
                       reason="opt-in: set LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR to run a real ComfyUI"),
]
sys.path.insert(0, str(REPO / "example_workflows"))
from build_dataset_to_lora import api_prompt  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, body: dict | None = None, key: str | None = None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfy-graph")
    emu = start_emulator()
    assert emu is not None, "gcp-storage-emulator is not installed"
    bucket = emu.new_bucket()
    os.environ["STORAGE_EMULATOR_HOST"] = emu.url
    from comfy_lora_cloud.storage import open_storage

    storage = open_storage(f"gs://{bucket}/lc")
    seed_bucket(storage, dataset="seed", images=1, models=True)  # cached base weights
    vport = _port()
    venv_bin = str(Path(sys.executable).parent)
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.vast", "--port", str(vport), "--api-key", KEY, "--run-processes",
         "--created-s", "0.2", "--loading-s", "0.5", "--workdir", str(tmp / "instances"),
         "--image-env", f"LORA_CLOUD_KOHYA_LAUNCHER={sys.executable} {FAKE_KOHYA}",
         "--image-env", f"STORAGE_EMULATOR_HOST={emu.url}", "--image-env", f"PYTHONPATH={REPO}",
         "--image-env", "FAKE_KOHYA_STEP_SECONDS=0.005"],
        cwd=REPO, env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"},
        stdout=subprocess.PIPE, text=True)
    assert "listening on" in fake.stdout.readline()
    vast_url = f"http://127.0.0.1:{vport}"
    cport = _port()
    home = tmp / "home"
    env = {**os.environ, "COMFY_PORT": str(cport), "COMFY_DIR": str(COMFY_DIR), "LORA_CLOUD_HOME": str(home),
           "LORA_CLOUD_STORAGE": f"gs://{bucket}/lc", "LORA_CLOUD_VAST_URL": vast_url,
           "LORA_CLOUD_VAST_API_KEY": KEY, "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON,
           "LORA_CLOUD_MAX_RUN_USD": "50"}
    subprocess.run(["bash", str(SHARED / "comfyui-harness.sh"), f"{REPO}:comfy_lora_cloud"], env=env, check=True,
                   timeout=1800)
    try:
        yield {"comfy": f"http://127.0.0.1:{cport}", "vast": vast_url, "storage": storage, "home": home}
    finally:
        subprocess.run(["bash", str(SHARED / "comfyui-stop.sh")], env=env, timeout=60)
        fake.terminate()
        fake.wait(10)
        stop_emulator(emu)


def _queue(base: str, prompt: dict, timeout: float = 300) -> dict:
    pid = _http(f"{base}/prompt", {"prompt": prompt, "client_id": "lora-cloud-test"})["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = _http(f"{base}/history/{pid}")
        if pid in hist and hist[pid]["status"].get("completed") is not None and (
                hist[pid]["status"]["completed"] or hist[pid]["status"]["status_str"] == "error"):
            return hist[pid]
        time.sleep(1)
    raise AssertionError(f"prompt {pid} did not finish in {timeout}s")


def _dataset_prompt() -> dict:
    prompt = api_prompt(only={1, 2, 3, 5, 6, 7}, overrides={
        1: {"source": "input", "path": "lc_graph_photos"}, 2: {"resolution": 512},
        3: {"model": "none", "trigger": "ohwx"}, 5: {"name": "graph_char"}})
    prompt["99"] = {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}}
    return prompt


def test_whole_workflow_validates(stack):
    models = COMFY_DIR / "models"
    for sub, name in (("diffusion_models", "flux1-dev.safetensors"), ("text_encoders", "clip_l.safetensors"),
                      ("text_encoders", "t5xxl_fp8_e4m3fn.safetensors"), ("vae", "ae.safetensors")):
        (models / sub).mkdir(parents=True, exist_ok=True)
        (models / sub / name).touch()
    broken = api_prompt(overrides={1: {"path": "no-such-folder-here"}})  # validates, then fails harmlessly
    out = _http(f"{stack['comfy']}/prompt", {"prompt": broken, "client_id": "lora-cloud-test"})
    assert out["node_errors"] == {}
    _http(f"{stack['comfy']}/interrupt", {})
    # the template browser lists it and serves the UI-format file (from example_workflows/: a
    # folder named workflows/ would be shadowed by examples/, which ComfyUI also serves there)
    assert "dataset_to_lora" in _http(f"{stack['comfy']}/api/workflow_templates")["comfy_lora_cloud"]
    served = _http(f"{stack['comfy']}/api/workflow_templates/comfy_lora_cloud/dataset_to_lora.json")
    assert {n["type"] for n in served["nodes"]} >= {"LoraCloudLaunchTrainer", "LoraCloudAwaitLora", "KSampler"}


def test_graph_queued_in_comfyui_brings_the_lora_and_requeue_rents_nothing(stack):
    from skimage import data
    from PIL import Image

    photos = COMFY_DIR / "input" / "lc_graph_photos"
    shutil.rmtree(photos, ignore_errors=True)
    photos.mkdir(parents=True)
    face = Image.fromarray(data.astronaut())
    for i, size in enumerate((1024, 800, 700)):
        face.resize((size, size)).save(photos / f"a{i}.jpg", quality=92)
    first = _queue(stack["comfy"], _dataset_prompt())
    assert first["status"]["status_str"] == "success", json.dumps(first["status"])[:2000]
    name = first["outputs"]["99"]["text"][0]
    assert name == "lora_cloud/graph_char.safetensors"
    lora = COMFY_DIR / "models" / "loras" / name
    from comfy_lora_cloud.storage.base import checksum_file

    assert checksum_file(lora).md5 == stack["storage"].stat("loras/graph_char.safetensors").md5
    for _ in range(60):  # the trainer destroys its instance right after marking the run done
        if not _http(f"{stack['vast']}/api/v1/instances/", key=KEY)["instances"]:
            break
        time.sleep(1)
    assert _http(f"{stack['vast']}/api/v1/instances/", key=KEY)["instances"] == []
    # queue again with a changed Launch input, so ComfyUI really runs Launch and Await (unchanged
    # nodes come from its cache): same dataset and training config -> the finished run is reused
    again = _dataset_prompt()
    again["6"]["inputs"]["max_usd"] = 49.0
    lora.unlink()
    second = _queue(stack["comfy"], again)
    assert second["status"]["status_str"] == "success", json.dumps(second["status"])[:2000]
    assert second["outputs"]["99"]["text"][0] == name and lora.is_file()
    with sqlite3.connect(stack["home"] / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 1
