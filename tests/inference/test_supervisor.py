"""What runs inside the inference image, as plain Python and shell: the supervisor
(worker/inference.py) with the fake remote ComfyUI as its ComfyUI, against a bucket folder.
Weights come from the bucket cache or a stand-in for the Hub (and get cached); LoRAs are pulled at
start and again on demand; outputs go to the bucket with their workflow; idle minutes, the hard
deadline and a dead ComfyUI each end the session with a status and a destroyed instance."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from comfy_lora_cloud.errors import TrainingError
from comfy_lora_cloud.models import SessionState
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.inference import model_files, read_session_status
from comfy_lora_cloud.worker.inference import Supervisor
from tests.fixtures.sshd import free_port

REPO = Path(__file__).resolve().parents[2]
FAKE_COMFY = [sys.executable, "-m", "tests.fakes.comfyui"]
WAIT = 60.0  # upper bounds for a busy machine, never timing assertions


class FakeHub:
    """The Hugging Face side (the network is not reachable here): serves small files, or refuses
    a gated repo as the Hub does for a token without the licence."""

    def __init__(self, gated: bool = False):
        self.gated, self.downloads = gated, []

    def check(self, repo_id: str) -> None:
        if self.gated and repo_id.startswith("black-forest-labs/"):
            raise TrainingError(f"{repo_id} is gated on Hugging Face and this token cannot read it")

    def download(self, repo_id: str, filename: str, dest_dir: Path) -> Path:
        self.downloads.append(filename)
        dest_dir.mkdir(parents=True, exist_ok=True)
        (dest_dir / filename).write_bytes(b"hub:" + filename.encode())
        return dest_dir / filename


class Destroy:
    def __init__(self):
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return True


@pytest.fixture
def bucket(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    for filename, _repo in list(model_files("fp8").values())[:3]:  # one file is missing: from the "Hub"
        storage.write_bytes(f"models/{filename}", b"cached:" + filename.encode())
    storage.write_bytes("loras/first.safetensors", b"lora one")
    storage.write_bytes("loras/first.json", b"{}")
    return storage


@pytest.fixture(autouse=True)
def _no_orphans():
    """A test that fails mid-session must not leave its ComfyUI running."""
    yield
    for sup in _STARTED:
        if sup.process is not None and sup.process.poll() is None:
            sup.process.kill()
            sup.process.wait(10)
    _STARTED.clear()


_STARTED: list = []


def _supervisor(bucket, tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("FAKE_COMFY_STEP_SECONDS", kw.pop("step_s", "0.02"))
    destroy = Destroy()
    hub = kw.pop("hub", FakeHub())
    sup = Supervisor(session_id="session-t1", storage=bucket, workdir=tmp_path / "work", command=FAKE_COMFY,
                     weights=hub, destroy=destroy, port=free_port(), tick_s=0.1, heartbeat_s=0.5,
                     lora_sync_s=kw.pop("lora_sync_s", 3600.0), **kw)
    _STARTED.append(sup)
    return sup, destroy, hub


def _run(sup) -> tuple[threading.Thread, list]:
    result: list = []
    t = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    t.start()
    return t, result


def _wait(cond, timeout=WAIT):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def _post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def flux_prompt(lora: str | None, steps: int = 4, prefix: str = "lc/test") -> dict:
    files = model_files("fp8")
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": files["diffusion_models"][0],
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": files["text_encoders/clip_l"][0],
                                                         "clip_name2": files["text_encoders/t5"][0], "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"][0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["2", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["4" if lora else "1", 0], "seed": 7, "steps": steps,
                                                   "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["5", 0], "negative": ["6", 0],
                                                   "latent_image": ["7", 0], "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": prefix}},
    }
    if lora:
        prompt["4"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": lora,
                                                                       "strength_model": 1.0}}
    return prompt


def test_a_session_serves_prompts_pushes_outputs_syncs_loras_and_stops_when_idle(bucket, tmp_path, monkeypatch):
    sup, destroy, hub = _supervisor(bucket, tmp_path, monkeypatch, idle_s=4.0)
    thread, result = _run(sup)
    _wait(lambda: (st := read_session_status(bucket, "session-t1")) is not None and st.state is SessionState.READY)

    # weights: three from the bucket's cache, the missing one from the "Hub", then cached for next time
    assert hub.downloads == [model_files("fp8")["vae"][0]]
    assert bucket.exists(f"models/{model_files('fp8')['vae'][0]}")
    assert (sup.models_dir / "diffusion_models" / model_files("fp8")["diffusion_models"][0]).read_bytes() \
        .startswith(b"cached:")
    # the names the pack's templates use lead to the file this precision has
    assert (sup.models_dir / "diffusion_models" / "flux1-dev.safetensors").read_bytes() == \
        (sup.models_dir / "diffusion_models" / model_files("fp8")["diffusion_models"][0]).read_bytes()
    assert (sup.loras_dir / "first.safetensors").read_bytes() == b"lora one"  # LoRAs pulled at start
    assert not (sup.loras_dir / "first.json").exists()

    # a prompt with the LoRA: ComfyUI (the fake) validates it against the files on disk
    queued = _post(sup.port, "/prompt", {"prompt": flux_prompt("lora_cloud/first.safetensors"), "client_id": "x"})
    _wait(lambda: bucket.exists("outputs/session-t1/lc_test_00001_.png.json"))  # written after the image
    meta = json.loads(bucket.read_bytes("outputs/session-t1/lc_test_00001_.png.json"))
    assert meta["prompt"]["4"]["inputs"]["lora_name"] == "lora_cloud/first.safetensors"
    assert meta["session"] == "session-t1" and queued["prompt_id"]

    # a LoRA trained while the session runs: there after a sync request, no restart
    bucket.write_bytes("loras/second.safetensors", b"lora two")
    (sup.workdir / ".sync-loras").touch()
    _wait(lambda: (sup.loras_dir / "second.safetensors").is_file())
    _post(sup.port, "/prompt", {"prompt": flux_prompt("lora_cloud/second.safetensors", prefix="b"),
                                "client_id": "x"})
    _wait(lambda: bucket.exists("outputs/session-t1/b_00001_.png.json"))

    # nothing more to do: it stops itself after its idle time, with everything pushed
    thread.join(WAIT)
    assert result == [SessionState.IDLE] and destroy.calls == 1
    status = read_session_status(bucket, "session-t1")
    assert status.state is SessionState.IDLE and status.outputs == 2 and "idle" in status.message
    assert sup.process.poll() is not None  # ComfyUI is stopped
    args = sup.process.args
    assert args[args.index("--listen") + 1] == "127.0.0.1"  # loopback only: reached through the tunnel


def test_the_deadline_ends_a_busy_session(bucket, tmp_path, monkeypatch):
    sup, destroy, _hub = _supervisor(bucket, tmp_path, monkeypatch, idle_s=3600.0, max_hours=3 / 3600,
                                     step_s="0.5")
    thread, result = _run(sup)
    _wait(lambda: (st := read_session_status(bucket, "session-t1")) is not None and st.state is SessionState.READY)
    _post(sup.port, "/prompt", {"prompt": flux_prompt(None, steps=1000), "client_id": "x"})  # busy until killed
    thread.join(WAIT)
    assert result == [SessionState.TIMED_OUT] and destroy.calls == 1
    assert read_session_status(bucket, "session-t1").state is SessionState.TIMED_OUT


def test_a_dead_comfyui_fails_the_session_and_destroys_it(bucket, tmp_path, monkeypatch):
    sup, destroy, _hub = _supervisor(bucket, tmp_path, monkeypatch, idle_s=3600.0)
    thread, result = _run(sup)
    _wait(lambda: (st := read_session_status(bucket, "session-t1")) is not None and st.state is SessionState.READY)
    sup.process.kill()
    thread.join(WAIT)
    assert result == [SessionState.FAILED] and destroy.calls == 1
    status = read_session_status(bucket, "session-t1")
    assert status.state is SessionState.FAILED and "ComfyUI exited" in status.error


def test_gated_weights_fail_before_anything_starts(bucket, tmp_path, monkeypatch):
    bucket.delete(f"models/{model_files('fp8')['diffusion_models'][0]}")  # ungated Kijai file: fine
    bucket.delete(f"models/{model_files('fp8')['text_encoders/clip_l'][0]}")
    sup, destroy, hub = _supervisor(bucket, tmp_path, monkeypatch, idle_s=3600.0, hub=FakeHub(gated=True))
    assert sup.run() is SessionState.FAILED and destroy.calls == 1
    status = read_session_status(bucket, "session-t1")
    assert "gated" in status.error and sup.process is None and hub.downloads == []


def test_the_templates_are_in_the_remote_comfyuis_workflows_folder(tmp_path):
    from comfy_lora_cloud.worker.inference import TEMPLATES_DIR, install_workflows

    names = install_workflows(tmp_path / "user")
    folder = tmp_path / "user" / "default" / "workflows"
    for template in ("basic_txt2img", "lora_comparison", "img2img_refine", "batch_generation", "controlnet_pose",
                     "upscale_4x"):
        assert f"{template}.json" in names
        assert (folder / f"{template}.json").read_bytes() == (TEMPLATES_DIR / f"{template}.json").read_bytes()
    (folder / "basic_txt2img.json").write_text("{}")  # the user's edit in this session
    assert install_workflows(tmp_path / "user") == [] and (folder / "basic_txt2img.json").read_text() == "{}"
