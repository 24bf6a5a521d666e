"""Opt-in: the six templates in a real ComfyUI with the six packs at their pinned commits.

ComfyUI (../shared/tools/comfyui-harness.sh) runs with this pack and the packs of
comfy_lora_cloud/data/comfy_packs.json (scripts/comfy_packs.py puts them at their commits).
Checks:

- the recorded node definitions (tests/data/object_info.json) are what this ComfyUI exposes;
  when they are not, the file is rewritten (review the diff and commit it) and the test fails;
- ``POST /prompt`` accepts every template, in every variant, with no ``node_errors`` (model files
  are empty stand-ins made by the test: validation checks names, not contents);
- the template browser lists the six under comfy_lora_cloud and serves them;
- ComfyUI's own frontend (in Chromium) opens each template's UI form and turns it into the same
  prompt as our API form (``app.graphToPrompt``): the widget order, the links, the muted and the
  bypassed nodes are read as we write them;
- what runs on a CPU with a stand-in model runs: upscale_4x's model upscale (a tiny ESRGAN made
  by the test), up to its preview, and the image is 4x the input (the Flux parts need the real
  weights and a GPU: T5-XXL and the Flux transformer have fixed sizes in ComfyUI);
- the sidebar's LoRA test route queues basic_txt2img on this very ComfyUI (over loopback) and
  follows it to its end (a failure: the Flux files are stand-ins).

Needs LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR (a git directory holding Comfy-Org/ComfyUI).
Optional: COMFY_DIR (default /tmp/ComfyUI-templates), COMFY_VENV (default
/tmp/comfy-venv-templates; the harness builds it when missing, and the packs' Python needs of
comfy_packs.json are pip-installed into it when they are missing), PACKS_MIRROR (git directories
``<owner>+<name>/repo`` to take the packs from instead of GitHub), LORA_CLOUD_TEST_PACKS (a
folder that already holds them).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from comfy_lora_cloud.workflows import MODEL_FILES, TEMPLATES
from tests.fixtures.object_info import RECORDED, all_variants, record

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "tools"
COMFY_DIR = Path(os.environ.get("COMFY_DIR", "/tmp/ComfyUI-templates"))
# its own venv by default: the packs' needs (ultralytics, opencv...) stay out of the other tests'
COMFY_VENV = Path(os.environ.get("COMFY_VENV", "/tmp/comfy-venv-templates"))
PACKS_SPEC = json.loads((REPO / "comfy_lora_cloud" / "data" / "comfy_packs.json").read_text())

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(os.environ.get("LORA_CLOUD_TEST_COMFYUI") != "1",
                       reason="opt-in: set LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR to run a real ComfyUI"),
]

# A tiny ESRGAN (BasicSR's RRDBNet names, scale 4) that spandrel, and so ComfyUI, loads
TINY_ESRGAN = r"""
import sys, torch
torch.manual_seed(0)
nf, gc, sd = 8, 32, {}  # spandrel takes the growth channels as 32
def conv(name, o, i):
    sd[name + ".weight"] = torch.randn(o, i, 3, 3) * 0.1
    sd[name + ".bias"] = torch.zeros(o)
conv("conv_first", nf, 3)
for r in (1, 2, 3):
    for c in range(1, 6):
        conv(f"body.0.rdb{r}.conv{c}", nf if c == 5 else gc, nf + (c - 1) * gc)
for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
    conv(name, nf, nf)
conv("conv_last", 3, nf)
torch.save(sd, sys.argv[1])
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, object]:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, raw


def _packs(tmp: Path) -> list[Path]:
    given = os.environ.get("LORA_CLOUD_TEST_PACKS")
    if given:
        return [Path(given) / p["name"] for p in PACKS_SPEC["packs"] if not p.get("into")]
    dest = Path(os.environ.get("LORA_CLOUD_PACKS_CACHE", "/tmp/lora-cloud-packs"))
    cmd = [sys.executable, str(REPO / "scripts" / "comfy_packs.py"), str(dest)]
    if os.environ.get("PACKS_MIRROR"):
        cmd += ["--mirror", os.environ["PACKS_MIRROR"]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800).stdout
    return [Path(line) for line in out.splitlines() if line.strip()]


def _venv_ready() -> None:
    """The packs' Python needs in ComfyUI's venv (the venv itself the harness builds)."""
    py = COMFY_VENV / "bin" / "python"
    if not py.exists():
        return  # the harness creates it; the packs' needs are added on the next run
    probe = "import matplotlib, cv2, timm, skimage, piexif, segment_anything, ultralytics, fvcore, color_matcher"
    if subprocess.run([str(py), "-c", probe], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PACKS_SPEC["python"]], check=True, timeout=1800)


def _stand_in_models() -> None:
    defaults = {}
    for t in TEMPLATES.values():
        for graph in (t.graph(),):
            for node in graph.nodes.values():
                for name, value in node.widgets:
                    folder = MODEL_FILES.get((node.type, name))
                    if folder and folder != "input":
                        defaults[(folder, value)] = True
    for folder, name in defaults:
        path = COMFY_DIR / "models" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch()


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comfy-templates")
    packs = _packs(tmp)
    _venv_ready()
    port = _port()
    home = tmp / "home"
    env = {**os.environ, "COMFY_PORT": str(port), "COMFY_DIR": str(COMFY_DIR), "COMFY_VENV": str(COMFY_VENV),
           "COMFY_PID_FILE": str(tmp / "comfyui.pid"), "COMFY_LOG": str(tmp / "comfyui.log"),
           "HARNESS_SKIP_PACK_REQS": "1", "LORA_CLOUD_HOME": str(home), "LORA_CLOUD_STORAGE": str(tmp / "bucket")}
    subprocess.run(["bash", str(SHARED / "comfyui-harness.sh"), f"{REPO}:comfy_lora_cloud", *map(str, packs)],
                   env=env, check=True, timeout=1800)
    _venv_ready()  # a venv the harness just built gets the packs' needs; then start again
    _stand_in_models()
    base = f"http://127.0.0.1:{port}"
    try:
        yield {"url": base, "tmp": tmp, "home": home, "log": tmp / "comfyui.log"}
    finally:
        subprocess.run(["bash", str(SHARED / "comfyui-stop.sh")], env=env, timeout=60)


def _finish(base: str, prompt_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _s, hist = _http(f"{base}/history/{prompt_id}")
        if isinstance(hist, dict) and prompt_id in hist and hist[prompt_id]["status"].get("completed") is not None:
            status = hist[prompt_id]["status"]
            if status["completed"] or status["status_str"] == "error":
                return hist[prompt_id]
        time.sleep(0.5)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s")


def test_every_pack_loaded_and_the_record_is_current(comfy):
    log = comfy["log"].read_text(errors="replace").splitlines()
    for pack in PACKS_SPEC["packs"]:
        if not pack.get("into"):
            # "Import times for custom nodes" (after the prestartup times, which list some packs too)
            line = [ln for ln in log if ln.rstrip().endswith(f"custom_nodes/{pack['name']}") and " seconds" in ln][-1]
            assert "IMPORT FAILED" not in line, line
    _s, info = _http(f"{comfy['url']}/object_info")
    _s, stats = _http(f"{comfy['url']}/system_stats")
    live = record(info, stats["system"]["comfyui_version"])
    recorded = json.loads(RECORDED.read_text())
    if live != recorded:
        RECORDED.write_text(json.dumps(live, indent=1, sort_keys=True) + "\n")
        pytest.fail(f"{RECORDED.relative_to(REPO)} was refreshed from this ComfyUI: review the diff and commit it")


@pytest.mark.parametrize("name,graph", list(all_variants()), ids=[n for n, _g in all_variants()])
def test_comfyui_accepts_every_template(comfy, name, graph):
    status, out = _http(f"{comfy['url']}/prompt", {"prompt": graph.api(), "client_id": "lora-cloud-templates"})
    assert status == 200, json.dumps(out)[:3000]
    assert out["node_errors"] == {}
    _http(f"{comfy['url']}/queue", {"delete": [out["prompt_id"]]})
    _http(f"{comfy['url']}/interrupt", {})


def test_the_template_browser_lists_and_serves_them(comfy):
    _s, listed = _http(f"{comfy['url']}/api/workflow_templates")
    assert set(TEMPLATES) | {"dataset_to_lora"} == set(listed["comfy_lora_cloud"])
    for name, t in TEMPLATES.items():
        _s, served = _http(f"{comfy['url']}/api/workflow_templates/comfy_lora_cloud/{name}.json")
        assert served == t.graph().ui()


async def test_the_frontend_reads_each_template_as_we_write_it(comfy):
    from playwright.async_api import async_playwright

    chromium = os.environ.get("LORA_CLOUD_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium}")
    _http(f"{comfy['url']}/api/settings", {"Comfy.TutorialCompleted": True})
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = await browser.new_page()
            await page.goto(comfy["url"])
            await page.wait_for_function("!!(window.comfyAPI?.app?.app?.graph && "
                                         "window.LiteGraph?.registered_node_types?.LoraCloudPromptList)",
                                         timeout=120_000)
            for name, graph in all_variants():
                got = await page.evaluate("""async (wf) => { const app = window.comfyAPI.app.app;
                    await app.loadGraphData(wf, true, false, 'template');
                    return (await app.graphToPrompt()).output; }""", graph.ui())
                ours = graph.api()
                assert set(got) == set(ours), name
                for nid, node in ours.items():
                    # the frontend also sends its button widgets (KJNodes' "Update inputs") as null
                    front = {k: v for k, v in got[nid]["inputs"].items() if v is not None}
                    assert (got[nid]["class_type"], front) == (node["class_type"], node["inputs"]), (name, nid)
        finally:
            await browser.close()


def test_upscale_4x_runs_its_model_upscale_on_cpu(comfy):
    from PIL import Image

    model = COMFY_DIR / "models" / "upscale_models" / "RealESRGAN_x4plus.pth"
    subprocess.run([str(COMFY_VENV / "bin" / "python"), "-c", TINY_ESRGAN, str(model)], check=True, timeout=120)
    src = COMFY_DIR / "input" / "lc_upscale_in.png"
    Image.new("RGB", (40, 24), (120, 60, 200)).save(src)
    graph = TEMPLATES["upscale_4x"].graph(image=src.name)
    [preview] = [n for n in graph.nodes.values() if n.title == "4x, before the detail pass"]
    status, out = _http(f"{comfy['url']}/prompt", {"prompt": graph.api(), "client_id": "lora-cloud-templates",
                                                   "partial_execution_targets": [str(preview.id)]})
    assert status == 200 and out["node_errors"] == {}, out
    done = _finish(comfy["url"], out["prompt_id"])
    assert done["status"]["status_str"] == "success", json.dumps(done["status"])[:3000]
    [image] = done["outputs"][str(preview.id)]["images"]
    query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{comfy['url']}/view?{query}", timeout=60) as r:
        import io

        out_img = Image.open(io.BytesIO(r.read()))
    assert out_img.size == (160, 96)


def test_the_lora_test_route_queues_on_this_comfyui(comfy):
    from comfy_lora_cloud.storage import LocalStorage
    from tests.comfy.conftest import safetensors_bytes

    bucket = LocalStorage(comfy["tmp"] / "bucket")
    bucket.write_bytes("loras/cat.safetensors", safetensors_bytes({"ss_network_dim": "4"}))
    bucket.write_bytes("loras/cat.json", json.dumps({"trigger": "ohwx cat", "lora_type": "character"}).encode())
    api = f"{comfy['url']}/lora_cloud/api"
    _s, token = _http(f"{api}/token")
    headers = {token["header"]: token["token"]}
    status, defaults = _http(f"{api}/loras/cat/test")
    assert status == 200 and defaults["prompt"].startswith("photo of ohwx cat")
    assert defaults["target"] == comfy["url"]  # this ComfyUI, over loopback
    status, test = _http(f"{api}/loras/cat/test", {}, headers)
    assert status == 200, test
    hist = _finish(comfy["url"], test["prompt_id"])  # ComfyUI itself knows the prompt
    assert hist["prompt"][2]  # the queued graph
    _s, followed = _http(f"{api}/lora_tests/{test['prompt_id']}")
    # the Flux files are empty stand-ins, so the render fails, and the route says so
    assert followed["state"] == "failed" and followed["error"], followed
