"""Opt-in: the dashboard in a real ComfyUI (its own frontend), each section shown and photographed.

Needs LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR; starts its own ComfyUI (COMFY_DIR, default
/tmp/ComfyUI-dashboard; COMFY_PORT, default 8191) over a seeded LoRA Cloud home (a dataset, a
live run with its loss history and samples, a finished run, costs). With
DASHBOARD_SCREENSHOTS=<folder> the screenshots are written there (the README's come from
``DASHBOARD_SCREENSHOTS=docs/screenshots``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from comfy_lora_cloud.models import Cost, Run, RunState, RunStatus
from comfy_lora_cloud.service.library import upload_dataset
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage import LocalStorage, layout

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.test_dashboard import drop_files
from tests.comfy.conftest import png_bytes, safetensors_bytes

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO.parent / "shared" / "tools" / "comfyui-harness.sh"
STOP = REPO.parent / "shared" / "tools" / "comfyui-stop.sh"
WAIT_MS = 60_000  # a real frontend on a shared CPU: an upper bound, not a timing assertion

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(os.environ.get("LORA_CLOUD_TEST_COMFYUI") != "1",
                       reason="opt-in: set LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR to run a real ComfyUI"),
]


def seed_home(home: Path) -> None:
    """What a user who trained a little has: a dataset, a run training now, a finished one, costs."""
    now = time.time()
    home.mkdir(parents=True, exist_ok=True)
    bucket = LocalStorage(home / "bucket")
    upload_dataset(bucket, REPO / "examples" / "tiny_dataset", "tiny")
    state = StateStore(home / "state.db")
    runs = (("tiny-r16", 16, RunState.TRAINING, 620, now - 3000, (70, 110, 200)),
            ("tiny-r32", 32, RunState.DONE, 1200, now - 90000, (200, 120, 60)))
    for run_id, rank, run_state, step, started, color in runs:
        spec = {"run_id": run_id, "dataset": "tiny", "lora_type": "character", "lora_name": run_id, "trigger": "sks",
                "vram_gb": 24.0, "overrides": {"network_dim": rank, "network_alpha": float(rank)}}
        bucket.write_bytes(layout.run_key(run_id, "spec.json"), json.dumps(spec).encode())
        state.put_run(Run(id=run_id, dataset="tiny", preset="character", lora_name=run_id, state=run_state,
                          gpu="RTX 4090", dph=0.4, created_at=started, spec=spec))
        total = 1200
        status = RunStatus(run_id=run_id, state=run_state, step=step, total_steps=total,
                           loss=0.35 / (1 + step / (150 if rank == 16 else 120)), sec_per_step=1.7,
                           eta_seconds=(total - step) * 1.7 if run_state is RunState.TRAINING else None,
                           updated_at=now - 20 if run_state is RunState.TRAINING else started + 2400)
        bucket.write_bytes(layout.run_key(run_id, "status.json"), json.dumps(status.to_dict()).encode())
        events = [{"t": started, "kind": "state", "state": "training"}]
        events += [{"t": started + s, "kind": "progress", "step": s,
                    "loss": round(0.35 / (1 + s / (150 if rank == 16 else 120)) + 0.01 * ((s * 7919) % 13) / 13, 5)}
                   for s in range(20, step, 20)]
        bucket.write_bytes(layout.run_key(run_id, "events.jsonl"), "".join(json.dumps(e) + "\n" for e in events).encode())
        for i, at in enumerate((300, 600)):
            if at <= step:
                shade = tuple(min(255, c + 30 * i) for c in color)
                bucket.write_bytes(layout.run_key(run_id, f"samples/{run_id}_{at:06d}_00_20261120120000.png"),
                                   png_bytes(shade, (256, 256)))
        state.add_cost(Cost("9", run_id, "gpu", 0.4 * (step * 1.7) / 3600, started, started + step * 1.7))
    bucket.write_bytes(layout.lora_key("tiny-r32"), safetensors_bytes({"ss_network_dim": "32", "ss_output_name": "tiny-r32"}))
    bucket.write_bytes(layout.lora_meta_key("tiny-r32"), json.dumps({"run": "tiny-r32", "dataset": "tiny"}).encode())


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    if not HARNESS.exists() or not os.environ.get("COMFY_MIRROR"):
        pytest.fail("LORA_CLOUD_TEST_COMFYUI=1 needs ../shared/tools/comfyui-harness.sh and COMFY_MIRROR")
    home = tmp_path_factory.mktemp("dashboard-home")
    seed_home(home)
    port = os.environ.get("COMFY_PORT", "8191")
    comfy_dir = os.environ.get("COMFY_DIR", "/tmp/ComfyUI-dashboard")
    env = {**os.environ, "COMFY_PORT": port, "COMFY_DIR": comfy_dir,
           "COMFY_PID_FILE": os.environ.get("COMFY_PID_FILE", f"{comfy_dir}.pid"),
           "COMFY_LOG": os.environ.get("COMFY_LOG", f"{comfy_dir}.log"),
           "HARNESS_SKIP_PACK_REQS": os.environ.get("HARNESS_SKIP_PACK_REQS", "1"),
           "LORA_CLOUD_HOME": str(home), "LORA_CLOUD_NOTIFY_DESKTOP": "false"}
    for key in ("LORA_CLOUD_STORAGE", "VAST_API_KEY", "LORA_CLOUD_VAST_API_KEY"):
        env.pop(key, None)
    subprocess.run(["bash", str(HARNESS), f"{REPO}:comfy_lora_cloud"], env=env, check=True, timeout=1800)
    base = f"http://127.0.0.1:{port}"
    req = urllib.request.Request(f"{base}/api/settings", data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=30).close()  # no first-run dialog over the screenshots
    yield base, home
    subprocess.run(["bash", str(STOP)], env=env, timeout=60)


async def test_dashboard_sections_in_a_real_comfyui(comfyui):
    from playwright.async_api import async_playwright, expect

    base, home = comfyui
    out = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or home / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"{exc}\n{exc.stack}"))
        await page.goto(base)
        button = page.locator('button[aria-label^="LoRA Cloud"]')
        await expect(button).to_be_visible()
        await button.click()
        root = page.locator(".lcl-root")
        await expect(root.locator('[data-tab="instances"]')).to_be_visible()
        gutter = page.locator(".p-splitter-gutter").first  # widen the side panel, as a user would
        if await gutter.count():
            box = await gutter.bounding_box()
            if box:
                await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                await page.mouse.down()
                await page.mouse.move(box["x"] + 200, box["y"] + box["height"] / 2, steps=5)
                await page.mouse.up()
        await expect(root.locator('[data-cost="month"]')).to_contain_text("$")
        await expect(root.locator('[data-notify="notify_toast"]')).to_be_checked()
        await page.screenshot(path=str(out / "instances.png"))

        await root.locator('[data-tab="datasets"]').click()
        card = root.locator('[data-dataset="tiny"]')
        await card.locator(".lcl-link").click()
        await expect(card.locator("figure")).to_have_count(8)
        await page.wait_for_function(
            "[...document.querySelectorAll('[data-dataset=\"tiny\"] figure img')].every(i => i.complete && i.naturalWidth)",
            timeout=WAIT_MS)
        await card.locator('[data-file="astronaut.jpg"] figcaption').click()
        await page.screenshot(path=str(out / "datasets.png"))
        await card.locator('[data-file="astronaut.jpg"] textarea').press("Escape")

        await root.locator('[data-tab="training"]').click()
        await expect(root.locator("[data-estimate]")).to_contain_text("$")
        await page.wait_for_function(
            "(document.querySelector('[data-run=\"tiny-r16\"] svg.lcl-loss polyline')?.getAttribute('points') || '')"
            ".split(' ').length > 10", timeout=WAIT_MS)
        await page.screenshot(path=str(out / "training.png"))
        await root.locator('[data-compare="tiny-r16"]').check()
        await root.locator('[data-compare="tiny-r32"]').check()
        await root.locator('[data-action="compare"]').click()
        dialog = page.locator('[data-dialog="compare"]')
        await expect(dialog.locator("svg.lcl-loss polyline")).to_have_count(2)
        await expect(dialog.locator('[data-compare-config] [data-config-key="network_dim"]')).to_have_class("lcl-diff")
        await page.wait_for_function(
            "[...document.querySelectorAll('[data-compare-samples] img')].every(i => i.complete && i.naturalWidth)",
            timeout=WAIT_MS)
        await page.screenshot(path=str(out / "compare.png"))
        await dialog.locator('[data-action="close-dialog"]').click()

        await root.locator('[data-tab="datasets"]').click()
        await root.locator('input[aria-label="New dataset name"]').fill("photos")
        photos = ("astronaut", "chelsea", "coffee", "rocket")
        await drop_files(page, "[data-drop]", {f"{p}.jpg": (REPO / "examples" / "tiny_dataset" / f"{p}.jpg").read_bytes()
                                               for p in photos})
        await expect(root.locator("[data-upload-progress]")).to_contain_text("4 staged")
        await root.locator('[data-action="open-prepare"]').click()
        prepare = page.locator('[data-dialog="prepare"]')
        await prepare.locator('input[aria-label="Trigger word"]').fill("sks")
        await prepare.locator('[data-action="run-prepare"]').click()
        await expect(prepare.locator("[data-review]")).to_have_count(4)
        await page.wait_for_function(
            "[...document.querySelectorAll('[data-review] img')].every(i => i.complete && i.naturalWidth)", timeout=WAIT_MS)
        await page.screenshot(path=str(out / "prepare.png"))
        await prepare.locator('[data-action="close-dialog"]').click()

        await root.locator('[data-tab="loras"]').click()
        await expect(root.locator('[data-lora="tiny-r32"]')).to_be_visible()
        await page.screenshot(path=str(out / "loras.png"))
        await browser.close()
    # ComfyUI's own bundle throws one at start-up (GraphView, CORE_SETTINGS); none may come from ours
    assert [e for e in errors if "comfy_lora_cloud" in e] == []
    for name in ("instances", "datasets", "training", "compare", "prepare", "loras"):
        assert (out / f"{name}.png").stat().st_size > 20_000
