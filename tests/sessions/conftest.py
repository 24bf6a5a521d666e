"""The whole remote-generation stack on one machine, with real parts:

- the fake vast.ai server (in a thread) runs each instance's on-start command, the image's
  ``inference_image/start.sh``, as a process: the supervisor (worker/inference.py) with the fake
  ComfyUI (tests/fakes/comfyui.py) as its ComfyUI, against the GCS emulator;
- every running instance reports the tests' real OpenSSH server as its ``ssh_host``/``ssh_port``,
  which accepts the keys the instance holds (the account's at creation, plus attached ones);
- the controller is the real ``lora-cloud`` CLI in subprocesses (or an in-process App).

"Remote" and local are one machine here, so the remote ComfyUI's port is a free local port
(``comfy_remote_port``) reached through sshd's forwarding, exactly as on an instance.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from comfy_lora_cloud.storage import open_storage
from comfy_lora_cloud.training.inference import model_files
from tests.fakes.vast.server import FakeVast
from tests.fixtures.sshd import Sshd, free_port

REPO = Path(__file__).resolve().parents[2]
VAST_KEY = "vast-account-key-sessions-0123456789"
SA_JSON = '{"type": "service_account", "client_email": "t@p.iam.gserviceaccount.com"}'
WAIT = 90.0  # upper bounds for a busy shared machine, never timing assertions


def _entry_point() -> list[str]:
    exe = Path(sys.executable).parent / "lora-cloud"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "comfy_lora_cloud.cli.main"]


@dataclass
class Stack:
    fake: FakeVast
    sshd: Sshd
    storage: Any
    env: dict[str, str]
    home: Path
    remote_port: int

    def cli(self, *args: str, check: int | None = 0, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(_entry_point() + list(args), capture_output=True, text=True, env={**self.env, **env},
                              timeout=timeout)
        if check is not None:
            assert proc.returncode == check, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
        return proc

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.cli("--json", *args, **kw).stdout)

    def popen(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(_entry_point() + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**self.env, **env}, start_new_session=True)

    def remote(self, path: str) -> Any:
        """The "remote" ComfyUI, straight (the test's view from inside the instance)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.remote_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def live_instances(self) -> list[Any]:
        with self.fake.state.lock:
            return list(self.fake.state.instances.values())


def wait_for(cond, timeout: float = WAIT, what: str = "condition"):
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.1)


def seed_models(storage: Any) -> None:
    """The bucket's models/ cache holds the fp8 weights (small stand-ins): no Hub needed."""
    for filename, _repo in model_files("fp8").values():
        storage.write_bytes(f"models/{filename}", b"weights:" + filename.encode())


@pytest.fixture
def instance_comfyui() -> str:
    """The ComfyUI command the image's supervisor runs on an instance (the fake; a module may
    override this fixture with a real ComfyUI)."""
    return f"{sys.executable} -m tests.fakes.comfyui"


@pytest.fixture
def stack(gcs_bucket, gcs_env, sshd, tmp_path, clean_env, instance_comfyui) -> Stack:
    storage_url = f"gs://{gcs_bucket}/lc"
    remote_port = free_port()
    fake = FakeVast(VAST_KEY, created_s=0.1, loading_s=0.3, run_processes=True, workdir=tmp_path / "instances",
                    ssh_endpoint=("127.0.0.1", sshd.port), authorized_keys=sshd.authorized_keys,
                    image_env={"LORA_CLOUD_START_SCRIPT": str(REPO / "inference_image" / "start.sh"),
                               "LORA_CLOUD_PYTHON": sys.executable, "PYTHONPATH": str(REPO),
                               "LORA_CLOUD_COMFY_COMMAND": instance_comfyui,
                               "STORAGE_EMULATOR_HOST": gcs_env.url, "FAKE_COMFY_STEP_SECONDS": "0.02"})
    url = fake.start_in_thread()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_CLOUD_")}
    env.update({"LORA_CLOUD_HOME": str(clean_env), "LORA_CLOUD_STORAGE": storage_url, "LORA_CLOUD_VAST_URL": url,
                "LORA_CLOUD_VAST_API_KEY": VAST_KEY, "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": SA_JSON,
                "LORA_CLOUD_SSH_USER": getpass.getuser(), "LORA_CLOUD_COMFY_REMOTE_PORT": str(remote_port),
                "STORAGE_EMULATOR_HOST": gcs_env.url, "PYTHONPATH": str(REPO), "COLUMNS": "200"})
    storage = open_storage(storage_url)
    seed_models(storage)
    storage.write_bytes("loras/first.safetensors", b"lora one")
    s = Stack(fake, sshd, storage, env, clean_env, remote_port)
    try:
        yield s
    finally:
        for inst in s.live_instances():  # nothing may outlive a test
            fake.state.destroy(inst.id)
        fake.stop()
        _kill_keepers(clean_env)


def _kill_keepers(home: Path) -> None:
    """Tunnel keepers the CLI started for this test's sessions (by their recorded pid)."""
    import signal
    import sqlite3

    db = home / "state.db"
    if not db.exists():
        return
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT value FROM kv WHERE key LIKE 'sessions:keeper:%'").fetchall()
    for (raw,) in rows:
        try:
            pid = json.loads(raw)["pid"]
            os.kill(int(pid), signal.SIGKILL)
        except (ValueError, KeyError, TypeError, ProcessLookupError, PermissionError):
            pass


def flux_workflow(steps: int = 4, prefix: str = "lc/cli") -> dict[str, Any]:
    """A Flux dev graph in API format, with a LoRA loader (what Export (API) gives)."""
    files = model_files("fp8")
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": files["diffusion_models"][0],
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": files["text_encoders/clip_l"][0],
                                                         "clip_name2": files["text_encoders/t5"][0], "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"][0]}},
        "4": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "none.safetensors",
                                                              "strength_model": 1.0}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "placeholder", "clip": ["2", 0]},
              "_meta": {"title": "Positive"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "11": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["5", 0], "guidance": 3.5}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 1, "steps": steps, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["11", 0], "negative": ["6", 0],
                                                   "latent_image": ["7", 0], "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": prefix}},
    }
