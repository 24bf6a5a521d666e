"""Opt-in (LORA_CLOUD_TEST_COMFYUI=1, COMFY_MIRROR): the inference image's self-test
(worker/inference_selftest.py) against a real ComfyUI with this pack linked in, outside an image.
The harness (../shared/tools/comfyui-harness.sh) prepares ComfyUI in a folder of this test's own
and is stopped at once; the self-test starts its own ComfyUI on CPU. Proves: a healthy install
passes all four lines; a pack that fails to import (a broken one linked in beside ours) fails the
"packs" line with ComfyUI's IMPORT FAILED line."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from comfy_lora_cloud.worker.inference_selftest import run_self_test

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO.parent / "shared" / "tools" / "comfyui-harness.sh"
STOP = REPO.parent / "shared" / "tools" / "comfyui-stop.sh"

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(os.environ.get("LORA_CLOUD_TEST_COMFYUI") != "1",
                       reason="opt-in: set LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR to run a real ComfyUI"),
]


@pytest.fixture(scope="module")
def comfy_command(tmp_path_factory):
    if not HARNESS.exists() or not os.environ.get("COMFY_MIRROR"):
        pytest.fail("LORA_CLOUD_TEST_COMFYUI=1 needs ../shared/tools/comfyui-harness.sh and COMFY_MIRROR")
    root = tmp_path_factory.mktemp("comfy")
    env = {**os.environ, "COMFY_DIR": str(root / "ComfyUI"), "COMFY_PORT": os.environ.get("COMFY_PORT", "8193"),
           "COMFY_PID_FILE": str(root / "pid"), "COMFY_LOG": str(root / "log"), "HARNESS_SKIP_PACK_REQS": "1"}
    subprocess.run(["bash", str(HARNESS), f"{REPO}:comfy_lora_cloud"], env=env, check=True, timeout=1800,
                   capture_output=True)
    subprocess.run(["bash", str(STOP)], env=env, timeout=60, capture_output=True)
    venv = Path(os.environ.get("COMFY_VENV", "/tmp/comfy-venv"))
    return [str(venv / "bin" / "python"), str(root / "ComfyUI" / "main.py")]


def test_a_healthy_install_passes(comfy_command):
    lines: list[str] = []
    rc = run_self_test(comfy_command, ready_timeout=300, out=lines.append)
    report = [s for s in lines if s.startswith(("self-test", "SELF-TEST"))]
    assert rc == 0, "\n".join(lines)
    assert [s.split(":")[0] for s in report] == ["self-test comfyui", "self-test packs", "self-test nodes",
                                                 "self-test templates", "SELF-TEST PASSED"]
    assert "comfy_lora_cloud" in report[1] and "LoraCloudAwaitLora" not in report[2]  # counts, not names
    assert "templates listed: " in report[3] and "dataset_to_lora" in report[3]  # among the others, by name


def test_a_pack_that_fails_to_import_fails_the_packs_line(comfy_command):
    broken = Path(comfy_command[1]).parent / "custom_nodes" / "broken_pack"
    broken.mkdir()
    (broken / "__init__.py").write_text("import no_such_module_here\n")
    try:
        lines: list[str] = []
        rc = run_self_test(comfy_command, ready_timeout=300, out=lines.append)
    finally:
        (broken / "__init__.py").unlink()
        broken.rmdir()
    packs = next(s for s in lines if s.startswith("self-test packs"))
    assert rc == 1 and packs.startswith("self-test packs: FAILED: ") and "IMPORT FAILED" in packs
    assert "broken_pack" in packs, shlex.join(comfy_command)
