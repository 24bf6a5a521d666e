"""Testing a LoRA in one click: the routes over the real service, queueing on a ComfyUI queue
(the fake, tests/fakes/comfyui.py: the real /prompt, /history, /queue and /view shapes, validating
every prompt against the recorded node definitions; Flux itself cannot run here).

The sidebar's prompt is prefilled with the LoRA's trigger word; Test queues basic_txt2img with
that LoRA, Compare queues lora_comparison; the status route follows the prompt to its image,
which the image route serves typed by its bytes; only tests this app queued are served; a
ComfyUI that is down, refuses the workflow or fails it is said clearly.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from comfy_lora_cloud.comfy.routes import PREFIX
from comfy_lora_cloud.storage import layout
from tests.comfy.conftest import safetensors_bytes, token_headers
from tests.fakes.comfyui import FakeComfyUI

A = PREFIX


def _lora(storage, name="sks-cat", **meta) -> None:
    storage.write_bytes(layout.lora_key(name), safetensors_bytes({"ss_network_dim": "16"}))
    sidecar = {"run_id": "run-9", "dataset": "cats", "trigger": "sks cat", "lora_type": "character", **meta}
    storage.write_bytes(layout.lora_meta_key(name), json.dumps(sidecar).encode())


@pytest.fixture
async def comfy(aiohttp_server, seeded, tmp_path):
    fake = FakeComfyUI(tmp_path / "comfy-out")
    fake.hold()  # a prompt waits until the test has seen it queued (_follow)
    server = await aiohttp_server(fake.app())
    seeded.app.templates.local_url = str(server.make_url("")).rstrip("/")
    return fake


async def _follow(client, comfy, prompt_id: str) -> tuple[list[str], dict]:
    """The test's states as the route reports them: first while ComfyUI holds it, then to its end."""
    states = []
    end = asyncio.get_running_loop().time() + 60  # an upper bound for a busy machine, not a timing
    while asyncio.get_running_loop().time() < end:
        body = await (await client.get(f"{A}/lora_tests/{prompt_id}")).json()
        states.append(body["state"])
        if body["state"] in ("done", "failed", "unknown"):
            return states, body
        comfy.release()
        await asyncio.sleep(0.01)
    raise AssertionError(f"never finished: {states}")


async def test_test_button_queues_basic_txt2img_and_serves_the_image(client, seeded, comfy):
    _lora(seeded.storage)
    defaults = await (await client.get(f"{A}/loras/sks-cat/test")).json()
    assert defaults["prompt"].startswith("photo of sks cat")  # prefilled with the trigger word
    assert defaults["target"] == seeded.app.templates.local_url

    refused = await client.post(f"{A}/loras/sks-cat/test", json={})  # queueing needs the token
    assert refused.status == 403 and not comfy.queued
    resp = await client.post(f"{A}/loras/sks-cat/test", json={"client_id": "sid-1"}, headers=await token_headers(client))
    assert resp.status == 200, await resp.text()
    test = await resp.json()
    assert test["template"] == "basic_txt2img" and test["lora"] == "sks-cat" and test["prompt"] == defaults["prompt"]

    queued = comfy.queued[test["prompt_id"]]
    assert queued.client_id == "sid-1"  # ComfyUI's own progress events go to the page that asked
    [loader] = [n for n in queued.prompt.values() if n["class_type"] == "LoraCloudLoraLoader"]
    assert loader["inputs"]["lora_name"] == "sks-cat" and loader["inputs"]["strength_model"] == 1.0
    assert defaults["prompt"] in {n["inputs"].get("text") for n in queued.prompt.values()}
    [save] = [n for n in queued.prompt.values() if n["class_type"] == "SaveImage"]
    assert save["inputs"]["filename_prefix"] == "lora_cloud/tests/sks-cat"

    states, done = await _follow(client, comfy, test["prompt_id"])
    assert states[0] in ("queued", "running") and states[-1] == "done"
    assert done["lora"] == "sks-cat" and done["error"] is None
    [image] = done["images"]
    assert (image["subfolder"], image["type"]) == ("lora_cloud/tests", "output")
    got = await client.get(f"{A}/lora_tests/{test['prompt_id']}/images/0")
    assert got.status == 200 and got.content_type == "image/png"
    assert await got.read() == comfy.files[("lora_cloud/tests", image["filename"])]
    assert got.headers["X-Content-Type-Options"] == "nosniff"

    assert (await client.get(f"{A}/lora_tests/{test['prompt_id']}/images/3")).status == 404
    assert (await client.get(f"{A}/lora_tests/{test['prompt_id']}/images/-1")).status == 400
    # a prompt this app did not queue is not followed, nor are its images served
    other = comfy.queued[test["prompt_id"]]
    comfy.queued["someone-elses"] = other
    assert (await client.get(f"{A}/lora_tests/someone-elses")).status == 404
    assert (await client.get(f"{A}/lora_tests/someone-elses/images/0")).status == 404


async def test_compare_strengths_queues_lora_comparison_with_the_typed_prompt(client, seeded, comfy):
    _lora(seeded.storage)
    resp = await client.post(f"{A}/loras/sks-cat/test", json={"compare": True, "prompt": "sks cat on a sofa"},
                             headers=await token_headers(client))
    test = await resp.json()
    assert resp.status == 200 and test["template"] == "lora_comparison" and test["prompt"] == "sks cat on a sofa"
    prompt = comfy.queued[test["prompt_id"]].prompt
    assert sorted(n["inputs"]["strength_model"] for n in prompt.values()
                  if n["class_type"] == "LoraCloudLoraLoader") == [0.0, 0.5, 0.75, 1.0]
    assert {n["inputs"]["lora_name"] for n in prompt.values() if n["class_type"] == "LoraCloudLoraLoader"} == {"sks-cat"}
    _states, done = await _follow(client, comfy, test["prompt_id"])
    assert len(done["images"]) == 1  # one grid


async def test_what_goes_wrong_is_said(client, seeded, comfy, aiohttp_server, unused_tcp_port, tmp_path):
    headers = await token_headers(client)
    missing = await client.post(f"{A}/loras/no-such/test", json={}, headers=headers)
    assert missing.status == 404 and "no LoRA named" in (await missing.json())["message"]
    bad = await client.post(f"{A}/loras/..%2Fx/test", json={}, headers=headers)
    assert bad.status in (400, 404)
    assert (await client.post(f"{A}/loras/sks-cat/test", json={"compare": "yes"}, headers=headers)).status == 400
    _lora(seeded.storage)

    # the ComfyUI fails the workflow (here: as a GPU without the model would)
    comfy.fail_with = "flux1-dev.safetensors: no such file"
    test = await (await client.post(f"{A}/loras/sks-cat/test", json={}, headers=headers)).json()
    _states, failed = await _follow(client, comfy, test["prompt_id"])
    assert failed["state"] == "failed" and "no such file" in failed["error"] and failed["images"] == []

    # ComfyUI refuses it at /prompt (its folder of diffusion models has no Flux): ComfyUI's
    # per-node answer, said node by node
    (tmp_path / "no-models").mkdir()
    refusing = await aiohttp_server(FakeComfyUI(tmp_path / "r", {"diffusion_models": [tmp_path / "no-models"]}).app())
    seeded.app.templates.local_url = str(refusing.make_url("")).rstrip("/")
    resp = await client.post(f"{A}/loras/sks-cat/test", json={}, headers=headers)
    body = await resp.json()
    assert resp.status == 422 and body["error"] == "WorkflowRejected"
    assert "node 2 (UNETLoader): Value not in list: unet_name" in body["message"]

    # nothing listens there
    seeded.app.templates.local_url = f"http://127.0.0.1:{unused_tcp_port}"
    down = await client.post(f"{A}/loras/sks-cat/test", json={}, headers=headers)
    assert down.status == 502 and "did not answer" in (await down.json())["message"]


async def test_where_a_test_is_queued(seeded):
    svc = seeded.app.templates
    assert await svc.target() == "http://127.0.0.1:8188"  # the comfyui_url setting
    svc.local_url = "http://127.0.0.1:8190"  # inside ComfyUI: that ComfyUI
    assert await svc.target() == "http://127.0.0.1:8190"

    class Sessions:  # a live remote session (remote generation) wins
        async def comfy_url(self):
            return "http://127.0.0.1:9001/"

    seeded.app.sessions = Sessions()
    assert await svc.target() == "http://127.0.0.1:9001"
    assert await svc.target("http://127.0.0.1:7000") == "http://127.0.0.1:7000"  # asked for explicitly
    from comfy_lora_cloud.errors import ConfigError

    with pytest.raises(ConfigError):
        await svc.target("file:///etc/passwd")


async def test_templates_route_lists_the_six(client):
    body = await (await client.get(f"{A}/templates")).json()
    assert [t["name"] for t in body["templates"]] == [
        "basic_txt2img", "lora_comparison", "img2img_refine", "batch_generation", "controlnet_pose", "upscale_4x"]
    compare = body["templates"][1]
    assert compare["parameters"]["strengths"] == [0.0, 0.5, 0.75, 1.0] and compare["packs"] == ["ComfyUI-KJNodes"]
