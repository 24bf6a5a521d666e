"""`lora-cloud lora list|show|test` as a user runs them (a subprocess), against a bucket folder and
a ComfyUI in another process (the fake, tests/fakes/comfyui.py: Flux cannot run here)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.training.lora_meta import LoraInfo, header_metadata, stamp_safetensors
from tests.fakes.fake_kohya import lora_tensors, write_safetensors

REPO = Path(__file__).resolve().parents[2]
INFO = LoraInfo(run_id="run-7", preset="character", lora_type="character", dataset="cats", trigger="sks cat",
                overrides={"max_train_epochs": 8}, images=12, steps=960, epochs=8, rank=16, alpha=16.0,
                learning_rate=2e-4, resolution=1024, final_loss=0.0871, gpu="RTX 4090", dph=0.4, cost_usd=1.234,
                created_at=1_790_000_000.0, date="2026-09-21T14:13:20Z")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stamped(tmp_path) -> Path:
    path = tmp_path / "sks-cat.safetensors"
    write_safetensors(path, lora_tensors(16, 16.0), {"ss_network_dim": "16", "ss_output_name": "sks-cat"})
    stamp_safetensors(path, header_metadata(INFO))
    return path


@pytest.fixture
def bucket(clean_env, stamped) -> LocalStorage:
    store = LocalStorage(clean_env / "bucket")
    store.upload_file(stamped, "loras/sks-cat.safetensors")
    store.write_bytes("loras/sks-cat.json", json.dumps({"name": "sks-cat", **INFO.to_dict()}).encode())
    return store


@pytest.fixture
def comfy(tmp_path):
    procs = []

    def start(*args: str) -> str:
        port = _port()
        proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.comfyui", "--port", str(port), *args], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert "To see the GUI go to" in proc.stdout.readline()
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_list_and_show_say_what_made_the_lora(cli, bucket, stamped):
    out = cli("lora", "list").stdout
    for text in ("sks-cat", "sks cat", "cats", "960", "16", "0.0871", "$1.23", "2026-09-21"):
        assert text in out, text
    shown = cli("lora", "show", "sks-cat").stdout
    for text in ("run-7", "max_train_epochs=8", "flux1-dev", "RTX 4090", "ss_network_dim", "0.0002", "$1.23"):
        assert text in shown, text
    data = cli.json("lora", "show", "sks-cat")
    assert data["lora_cloud"]["trigger"] == data["info"]["trigger"] == "sks cat"
    # a downloaded file describes itself, with no bucket at hand
    local = cli.json("lora", "show", str(stamped))
    assert local["lora_cloud"] == {k: v for k, v in INFO.to_dict().items() if v is not None}
    assert local["metadata"]["ss_output_name"] == "sks-cat"


def test_lora_test_renders_and_saves_the_image(cli, bucket, comfy, tmp_path):
    url = comfy()
    got = cli.json("lora", "test", "sks-cat", "--comfy", url, "--out", str(tmp_path / "out"))
    assert got["state"] == "done" and got["template"] == "basic_txt2img" and got["target"] == url
    assert got["prompt"].startswith("photo of sks cat")  # the trigger word, in a sentence for a character
    [image] = got["images"]
    saved = Path(image["saved"])
    assert saved.parent == tmp_path / "out" and saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the comfyui_url setting is the default; --no-wait returns at once
    queued = cli.json("lora", "test", "sks-cat", "--no-wait", "--compare", "-p", "sks cat in the snow",
                      LORA_CLOUD_COMFYUI_URL=url)
    assert (queued["state"], queued["template"], queued["prompt"]) == ("queued", "lora_comparison", "sks cat in the snow")


def test_lora_test_failures_exit_with_comfyuis_reason(cli, bucket, comfy):
    url = comfy("--fail-with", "CUDA out of memory")
    proc = cli("lora", "test", "sks-cat", "--comfy", url, check=8)
    assert "CUDA out of memory" in proc.stderr
    proc = cli("lora", "test", "sks-cat", "--comfy", "http://127.0.0.1:9", check=8)
    assert "did not answer" in proc.stderr
