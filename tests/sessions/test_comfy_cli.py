"""`lora-cloud comfy start|status|open|run|stop` end to end on the stack of conftest.py: a rented
"instance" running the image's start script, reached over a real sshd, generating through the
tunnel into a local folder and into the bucket."""

from __future__ import annotations

import json
import os
import signal
import stat

import httpx

from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.training.inference import read_session_status

from .conftest import REPO, VAST_KEY, WAIT, flux_workflow, wait_for


def test_start_run_stop(stack, tmp_path):
    started = stack.json("comfy", "start", "--idle-minutes", "10", "--max-hours", "1")
    sid = started["id"]
    assert started["state"] == "ready" and started["live"] and started["url"].startswith("http://127.0.0.1:")

    # what was rented: one labelled instance, the image's start script, nothing exposed, no account key
    [inst] = stack.live_instances()
    assert inst.label == f"lora-cloud:session:{sid}" and inst.runtype == "ssh"
    assert inst.onstart == 'bash "${LORA_CLOUD_START_SCRIPT:-/opt/lora-cloud/start.sh}"'
    assert not any(k.startswith("-p") for k in inst.env) and VAST_KEY not in json.dumps(inst.env)
    assert "HF_TOKEN" not in inst.env  # the bucket caches the weights
    assert inst.env["LORA_CLOUD_IDLE_MINUTES"] == "10" and inst.env["LORA_CLOUD_SESSION_ID"] == sid

    # the pack's own key, 0600, registered with vast.ai; the instance's host key pinned
    key = stack.home / "ssh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [k["public_key"] for k in stack.fake.state.ssh_keys] == [(stack.home / "ssh" / "id_ed25519.pub")
                                                                     .read_text().strip()]
    pinned = json.loads((stack.home / "ssh" / "host_keys.json").read_text())
    assert pinned[f"vast:{inst.id}"]["key"].split()[:2] == stack.sshd.host_public_key.split()[:2]

    # the URL works after `start` ended: a background tunnel holds it
    assert httpx.get(started["url"] + "/system_stats", timeout=20).json()["system"]["comfyui_version"]
    status = stack.json("comfy", "status")
    assert status["id"] == sid and status["url"] == started["url"] and status["cost_usd"] >= 0
    opened = stack.json("comfy", "open")
    assert opened["url"] == started["url"] and opened["browser"] is False

    # a LoRA trained after the session started: fetched onto it on demand by `run --lora`
    stack.storage.write_bytes("loras/fresh.safetensors", b"lora trained meanwhile")
    (tmp_path / "wf.json").write_text(json.dumps(flux_workflow()))
    out = tmp_path / "images"
    result = stack.json("comfy", "run", str(tmp_path / "wf.json"), "--lora", "fresh", "--prompt", "ohwx cat",
                        "--set", "KSampler.steps=3", "--out", str(out))
    [path] = result["images"]
    assert path == str(out / "cli_00001_.png") and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # ... and the same image lands in the bucket with its workflow
    key = f"outputs/{sid}/lc_cli_00001_.png"
    wait_for(lambda: stack.storage.exists(key + ".json"), what="the output in the bucket")
    meta = json.loads(stack.storage.read_bytes(key + ".json"))
    assert meta["prompt"]["4"]["inputs"]["lora_name"] == "lora_cloud/fresh.safetensors"
    assert meta["prompt"]["5"]["inputs"]["text"] == "ohwx cat" and meta["prompt"]["8"]["inputs"]["steps"] == 3
    assert stack.storage.read_bytes(key) == open(path, "rb").read()

    # two save nodes whose prefixes differ only in their folder: the remote names both outputs
    # twin_00001_.png (in subfolders a/ and b/); both are kept, neither overwrites the other
    twins = flux_workflow(prefix="a/twin")
    twins["12"] = {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "b/twin"}}
    (tmp_path / "twins.json").write_text(json.dumps(twins))
    pair = stack.json("comfy", "run", str(tmp_path / "twins.json"), "--lora", "fresh", "--set", "KSampler.steps=2",
                      "--out", str(out))
    assert sorted(os.path.basename(p) for p in pair["images"]) == ["twin_00001_-2.png", "twin_00001_.png"]
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in pair["images"])

    # one of the pack's templates by name (service/templates/catalog.py fills in the LoRA and the prompt)
    templated = stack.json("comfy", "run", "basic_txt2img", "--lora", "fresh", "--prompt", "ohwx dog",
                           "--set", "KSampler.steps=2", "--out", str(out))
    assert [os.path.basename(p) for p in templated["images"]] == ["basic_00001_.png"]

    # a workflow as the canvas saves it (what users have): converted against the remote ComfyUI's
    # /object_info through the tunnel; a canvas-only node the remote lacks is left out and named
    canvas = json.loads((REPO / "example_workflows" / "basic_txt2img.json").read_text())
    canvas["nodes"].append({"id": 99, "type": "Label (rgthree)", "mode": 0, "inputs": [], "outputs": [],
                            "widgets_values": []})
    (tmp_path / "canvas.json").write_text(json.dumps(canvas))
    saved = stack.json("comfy", "run", str(tmp_path / "canvas.json"), "--lora", "fresh", "--prompt", "ohwx bird",
                       "--set", "KSampler.steps=2", "--out", str(out))
    assert [os.path.basename(p) for p in saved["images"]] == ["basic_00002_.png"]
    assert saved["ignored"] == ["node 99 (Label (rgthree))"]
    [key] = wait_for(lambda: [o.key for o in stack.storage.list(f"outputs/{sid}/").objects
                              if o.key.endswith("basic_00002_.png.json")], what="the canvas run's output")
    ran = json.loads(stack.storage.read_bytes(key))["prompt"]
    assert ran["5"]["inputs"]["lora_name"] == "fresh" and ran["6"]["inputs"]["text"] == "ohwx bird"
    assert ran["10"]["inputs"]["steps"] == 2 and ran["10"]["inputs"]["model"] == ["5", 0] and "99" not in ran
    # a node the remote lacks that the graph needs: refused before anything is queued, named
    next(n for n in canvas["nodes"] if n["type"] == "VAEDecode")["type"] = "FancyDecode"
    (tmp_path / "canvas.json").write_text(json.dumps(canvas))
    refused = stack.cli("comfy", "run", str(tmp_path / "canvas.json"), check=2)
    assert "node 11 (FancyDecode" in refused.stderr and "does not have" in refused.stderr

    # stop: destroyed, the keeper gone, the session ended here and in the bucket
    keeper = json.loads(StateStore(stack.home / "state.db").get_kv(f"sessions:keeper:{sid}") or "null")
    stopped = stack.json("comfy", "stop")
    assert stopped["state"] == "stopped" and stopped["destroyed_instances"] == [str(inst.id)]
    assert stack.live_instances() == []
    assert read_session_status(stack.storage, sid).state.value == "stopped"
    assert stack.json("comfy", "status") is None
    wait_for(lambda: not _alive(keeper["pid"]), what="the tunnel keeper to exit")
    r = stack.cli("comfy", "stop", check=3)  # nothing left to stop: a clear error (not found, exit 3)
    assert "no session is running" in r.stderr


def test_the_tunnel_dropped_mid_run_reconnects_and_the_run_completes(stack, tmp_path):
    stack.json("comfy", "start", "--idle-minutes", "10")
    (tmp_path / "wf.json").write_text(json.dumps(flux_workflow(steps=60)))
    proc = stack.popen("--json", "comfy", "run", str(tmp_path / "wf.json"), "--lora", "first", "--out",
                       str(tmp_path / "out"), FAKE_COMFY_STEP_SECONDS="0.1")
    try:
        wait_for(lambda: stack.remote("/queue")["queue_running"], what="the prompt to run remotely")
        assert stack.sshd.drop_connections() >= 1  # every SSH session dies: the run's and the keeper's
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    [path] = json.loads(out)["images"]
    assert os.path.getsize(path) > 0
    assert stack.sshd.log_path.read_text().count("Accepted publickey") >= 3  # start, keeper, run + reconnects


def test_a_changed_host_key_is_refused(stack, tmp_path):
    stack.json("comfy", "start")
    stack.sshd.restart(new_host_key=True)  # the endpoint now shows another key
    (tmp_path / "wf.json").write_text(json.dumps(flux_workflow()))
    r = stack.cli("comfy", "run", str(tmp_path / "wf.json"), "--out", str(tmp_path / "out"), check=5)
    assert "does not match the one recorded on first contact" in r.stderr
    assert not (tmp_path / "out").exists()


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False
