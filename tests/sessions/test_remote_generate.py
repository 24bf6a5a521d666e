"""What the Remote Generate node does (service: Sessions.generate_watched), in-process on the stack
of conftest.py: with no session it rents one and waits for it, renders the workflow with the LoRA and
prompt through the tunnel and returns the images; ComfyUI's progress bar is fed from the node's side;
Cancel (the interrupt check raising) interrupts the prompt on the remote side and propagates."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.sessions import SessionRequest
from comfy_lora_cloud.service.templates.workflow_api import prepare, resolve_workflow
from tests.sessions.conftest import REPO, flux_workflow, wait_for


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


async def test_the_node_path_rents_renders_and_cancels(stack, monkeypatch):
    for key, value in stack.env.items():
        if key.startswith("LORA_CLOUD_") or key == "STORAGE_EMULATOR_HOST":
            monkeypatch.setenv(key, value)
    app = App.open()
    seen: list[tuple[int, int]] = []
    wf = prepare(flux_workflow(steps=5, prefix="node"), lora="first", prompt="ohwx cat", seed=3)
    result = await app.sessions.generate_watched(wf, lora="first", progress=lambda v, m: seen.append((v, m)),
                                                 interrupted=lambda: None, start=SessionRequest(idle_minutes=5),
                                                 poll_s=0.01)
    [image] = result.images
    assert image.data.startswith(b"\x89PNG") and image.filename == "node_00001_.png"
    assert seen and all(m == 5 for _, m in seen)
    assert len(stack.live_instances()) == 1  # rented once
    # the node's workflow input as ComfyUI saves a canvas: converted against the remote's /object_info
    canvas = (REPO / "example_workflows" / "basic_txt2img.json").read_text()
    result = await app.sessions.generate_watched(resolve_workflow(canvas, lora="first", prompt="ohwx owl", seed=8),
                                                 lora="first", poll_s=0.01)
    assert [i.filename for i in result.images] == ["basic_00001_.png"] and result.ignored == ()
    ran = json.loads(Image.open(io.BytesIO(result.images[0].data)).text["prompt"])
    assert ran["6"]["inputs"]["text"] == "ohwx owl" and ran["10"]["inputs"]["seed"] == 8
    url = await app.sessions.comfy_url()  # where other callers queue (the LoRA test)
    assert url == (await app.sessions.tunnel()).url and url.startswith("http://127.0.0.1:")

    # Cancel mid-run: the remote prompt is interrupted, the error reaches the caller
    def cancel_after_two_steps() -> None:
        if seen and seen[-1][0] >= 2:
            raise Interrupted()

    seen.clear()
    long = prepare(flux_workflow(steps=400, prefix="long"), lora="first", seed=4)  # 8 s at 0.02 s a step
    with pytest.raises(Interrupted):
        await app.sessions.generate_watched(long, progress=lambda v, m: seen.append((v, m)),
                                            interrupted=cancel_after_two_steps, poll_s=0.01)
    history = wait_for(lambda: [h for h in stack.remote("/history").values()
                                if h["prompt"][2]["8"]["inputs"].get("steps") == 400
                                and h["status"]["status_str"] == "error"], what="the remote interrupt")
    assert history[0]["status"]["messages"][-1][0] == "execution_interrupted"
    assert stack.remote("/queue") == {"queue_running": [], "queue_pending": []}
    assert len(stack.live_instances()) == 1  # Cancel stops the prompt, never the session
    await app.sessions.stop()
    assert await app.sessions.comfy_url() is None
