"""Opt-in: the pack loads in a real ComfyUI and its nodes appear in /object_info.

Needs LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR (a git directory holding Comfy-Org/ComfyUI);
../shared/tools/comfyui-harness.sh builds ComfyUI's own venv (several GB) on first use.
"""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO.parent / "shared" / "tools" / "comfyui-harness.sh"
STOP = REPO.parent / "shared" / "tools" / "comfyui-stop.sh"

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(os.environ.get("LORA_CLOUD_TEST_COMFYUI") != "1",
                       reason="opt-in: set LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR to run a real ComfyUI"),
]


@pytest.fixture(scope="module")
def comfyui():
    if not HARNESS.exists() or not os.environ.get("COMFY_MIRROR"):
        pytest.fail("LORA_CLOUD_TEST_COMFYUI=1 needs ../shared/tools/comfyui-harness.sh and COMFY_MIRROR")
    port = os.environ.get("COMFY_PORT", "8189")
    env = {**os.environ, "COMFY_PORT": port, "HARNESS_SKIP_PACK_REQS": os.environ.get("HARNESS_SKIP_PACK_REQS", "0")}
    subprocess.run(["bash", str(HARNESS), f"{REPO}:comfy_lora_cloud"], env=env, check=True, timeout=1800)
    yield f"http://127.0.0.1:{port}", Path(os.environ.get("COMFY_LOG", "/tmp/comfyui.log"))
    subprocess.run(["bash", str(STOP)], env=env, timeout=60)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_pack_loads_with_its_nodes(comfyui):
    base, log = comfyui
    text = log.read_text(errors="replace")
    assert "comfy_lora_cloud" in text and not any(
        "IMPORT FAILED" in line and "comfy_lora_cloud" in line for line in text.splitlines()
    )
    info = _get(f"{base}/object_info")
    ours = {k: v for k, v in info.items() if v.get("python_module") == "custom_nodes.comfy_lora_cloud"}
    assert "LoraCloudLoadDataset" in ours
    for node in ours.values():
        assert node["category"].startswith("LoRA Cloud")
    exts = _get(f"{base}/extensions")
    assert any(e.startswith("/extensions/comfy_lora_cloud/") for e in exts)
