"""Opt-in: remote generation against a real ComfyUI (CPU) on the "instance", behind the real sshd.

The instance's supervisor starts ComfyUI 0.3.64 with the pack linked in (so the remote side has
our routes); `lora-cloud comfy start/run` generate through the tunnel, a canvas-format workflow
converted against the real /object_info included (and a shipped template's canvas form is accepted
by /prompt without node_errors); the remote pack fetches a LoRA trained after the session started
and the real ComfyUI lists it (extra_model_paths.yaml);
a second, local real ComfyUI with the pack runs the Remote Generate node, whose images come back
into its graph. A CPU has no Flux, so the workflow draws with EmptyImage (no model needed).

Needs LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR (a git directory holding Comfy-Org/ComfyUI);
uses its own ComfyUI folder (LORA_CLOUD_REMOTE_COMFY_DIR, default /tmp/ComfyUI-remote) and the
harness's venv (COMFY_VENV, default /tmp/comfy-venv), and a local port of its own (COMFY_PORT 8192).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.sessions.conftest import REPO, wait_for

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(os.environ.get("LORA_CLOUD_TEST_COMFYUI") != "1",
                       reason="opt-in: set LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR to run a real ComfyUI"),
]
SHARED = REPO.parent / "shared" / "tools"
COMFY_DIR = Path(os.environ.get("LORA_CLOUD_REMOTE_COMFY_DIR", "/tmp/ComfyUI-remote"))
COMFY_VENV = Path(os.environ.get("COMFY_VENV", "/tmp/comfy-venv"))
LOCAL_PORT = int(os.environ.get("COMFY_PORT", "8192"))
PID_FILE = "/tmp/comfyui-remote-test.pid"
DRAW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16711680}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "real"}}}




def _draw_canvas() -> dict:
    """DRAW as ComfyUI's canvas saves it, with what the conversion must get right against the real
    definitions: a PrimitiveNode on a widget, a reroute, a bypassed node, a muted one, a note."""
    def node(nid, kind, widgets=(), inputs=(), outputs=(), mode=0):
        return {"id": nid, "type": kind, "mode": mode, "pos": [0, 0], "size": [200, 100], "flags": {},
                "properties": {}, "widgets_values": list(widgets),
                "inputs": [{"name": n, "type": t, "link": l, **({"widget": {"name": n}} if w else {})}
                           for n, t, l, w in inputs],
                "outputs": [{"name": t, "type": t, "links": ls, "slot_index": i} for i, (t, ls) in enumerate(outputs)]}

    nodes = [
        node(1, "EmptyImage", [64, 48, 1, 16711680], [("width", "INT", 1, True)], [("IMAGE", [2])]),
        node(2, "PrimitiveNode", [96, "fixed"], [], [("INT", [1])]),
        node(3, "Reroute", [], [("", "*", 2, False)], [("IMAGE", [3])]),
        node(4, "ImageInvert", [], [("image", "IMAGE", 3, False)], [("IMAGE", [4, 5])], mode=4),
        node(5, "SaveImage", ["canvas"], [("images", "IMAGE", 4, False)]),
        node(6, "ImageBlur", [1, 1.0], [("image", "IMAGE", 5, False)], [("IMAGE", [])], mode=2),
        node(7, "Note", ["drawn on the canvas"]),
    ]
    links = [[1, 2, 0, 1, 0, "INT"], [2, 1, 0, 3, 0, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"], [4, 4, 0, 5, 0, "IMAGE"],
             [5, 4, 0, 6, 0, "IMAGE"]]
    return {"last_node_id": 7, "last_link_id": 5, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


@pytest.fixture
def instance_comfyui() -> str:
    return f"{COMFY_VENV}/bin/python {COMFY_DIR}/main.py --cpu"


def _http(url: str, body: dict | None = None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else None


@pytest.fixture
def local_comfyui(stack):
    """The user's own ComfyUI (no GPU) with the pack, using the same lora-cloud home as the CLI."""
    env = {**stack.env, "COMFY_DIR": str(COMFY_DIR), "COMFY_VENV": str(COMFY_VENV), "COMFY_PORT": str(LOCAL_PORT),
           "COMFY_PID_FILE": PID_FILE, "COMFY_LOG": "/tmp/comfyui-remote-test.log", "HARNESS_SKIP_PACK_REQS": "1"}
    subprocess.run(["bash", str(SHARED / "comfyui-harness.sh"), f"{REPO}:comfy_lora_cloud"], env=env, check=True,
                   timeout=600)
    try:
        yield f"http://127.0.0.1:{LOCAL_PORT}"
    finally:
        subprocess.run(["bash", str(SHARED / "comfyui-stop.sh")], env={**os.environ, "COMFY_PID_FILE": PID_FILE},
                       timeout=60)


def test_comfy_run_and_the_remote_node_against_real_comfyui(stack, local_comfyui, tmp_path):
    started = stack.json("comfy", "start", "--idle-minutes", "15", timeout=600)
    sid, url = started["id"], started["url"]
    assert _http(url + "/system_stats")["system"]["comfyui_version"]

    # `comfy run` through the tunnel: the image here and in the bucket, with its prompt
    (tmp_path / "draw.json").write_text(json.dumps(DRAW))
    result = stack.json("comfy", "run", str(tmp_path / "draw.json"), "--out", str(tmp_path / "out"), timeout=600)
    [path] = result["images"]
    assert Path(path).read_bytes().startswith(b"\x89PNG")
    wait_for(lambda: stack.storage.exists(f"outputs/{sid}/real_00001_.png.json"), what="the output in the bucket")
    meta = json.loads(stack.storage.read_bytes(f"outputs/{sid}/real_00001_.png.json"))
    assert meta["prompt"]["1"]["class_type"] == "EmptyImage"

    # a workflow as the canvas saves it: converted against the real ComfyUI's /object_info through
    # the tunnel, accepted and run (the primitive's width, the reroute, the bypassed invert)
    (tmp_path / "canvas.json").write_text(json.dumps(_draw_canvas()))
    result = stack.json("comfy", "run", str(tmp_path / "canvas.json"), "--out", str(tmp_path / "out"), timeout=600)
    [path] = result["images"]
    assert Path(path).name == "canvas_00001_.png" and result["ignored"] == []
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == (96, 48) and im.getpixel((0, 0))[:3] == (255, 0, 0)  # red, not inverted
    # a shipped template in its canvas form: the real ComfyUI (with the pack, and the session's
    # stand-in weights listed) takes the converted prompt without node_errors
    from comfy_lora_cloud.remote.comfyui import ComfyClient
    from comfy_lora_cloud.service.templates.workflow_api import resolve_workflow

    async def queue_template() -> str:
        async with ComfyClient(url) as client:
            job = resolve_workflow((REPO / "example_workflows" / "basic_txt2img.json").read_text(), lora="first",
                                   prompt="ohwx cat", sets=["KSampler.steps=1"])
            prompt_id = await client.queue_prompt(job.api(await client.object_info()), "test")
            await client.interrupt(prompt_id)  # accepted is what counts: the weights are stand-ins
            return prompt_id

    assert asyncio.run(queue_template())

    # the pack on the remote side fetches a LoRA trained after the start; the real ComfyUI lists it
    stack.storage.write_bytes("loras/fresh.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    async def fetch() -> dict:
        async with ComfyClient(url) as client:
            return await client.fetch_lora("fresh")

    assert asyncio.run(fetch())["name"] == "fresh"
    loras = _http(url + "/object_info/LoraLoader")["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert "lora_cloud/fresh.safetensors" in loras and "lora_cloud/first.safetensors" in loras

    # the Remote Generate node in the user's own ComfyUI: its images come back into the graph
    prompt = {"1": {"class_type": "LoraCloudRemoteGenerate",
                    "inputs": {"workflow": json.dumps(DRAW), "lora_name": "", "prompt": "", "seed": -1,
                               "start_session": False}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    queued = _http(local_comfyui + "/prompt", {"prompt": prompt, "client_id": "test"})
    entry = wait_for(lambda: _http(f"{local_comfyui}/history/{queued['prompt_id']}").get(queued["prompt_id"]),
                     timeout=600, what="the local graph to finish")
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["2"]["images"]) == 1
    stack.json("comfy", "stop")
    assert stack.live_instances() == []
