"""Issue 13 in Chromium: each section's main path through the real routes over a real App.

Upload by drag and drop (checked on arrival, resumed), edit a caption and see it in the bucket
(a conflicting edit refused, undo), walk the preparation pipeline to a saved dataset, edit a
config and see the estimate change, reload during a run and get the loss graph back, compare two
runs, and a notification arriving as a toast.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from pathlib import Path

from PIL import Image

from comfy_lora_cloud.models import Run, RunState, RunStatus
from comfy_lora_cloud.service.events import GUARD_EVENT, RUN_EVENT
from comfy_lora_cloud.storage import layout

from tests.browser.conftest import Broadcaster, build_app
from tests.browser.conftest import open_sidebar as conftest_open_sidebar
from tests.comfy.conftest import NOW, png_bytes, seed

WAIT_MS = 20_000  # an upper bound for a slow shared CPU, not a timing assertion
SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")  # a folder: the sections as they look, for docs/


def jpeg(color, size=(900, 600)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    return out.getvalue()


async def open_sidebar(browser, aiohttp_server, seeded, broadcaster=None, viewport=(1000, 1100)):
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    broadcaster = broadcaster or Broadcaster()
    server = await aiohttp_server(build_app(lambda: seeded.app, broadcaster))
    sidebar = await conftest_open_sidebar(browser, str(server.make_url("/")), width=viewport[0],
                                          height=viewport[1], wait_ms=WAIT_MS)
    return sidebar.page, sidebar.root, sidebar.errors


async def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


async def drop_files(page, selector: str, files: dict[str, bytes], folder: str | None = None) -> None:
    """Drop files on an element the way a browser does: a ``drop`` event with a DataTransfer."""
    payload = [{"name": n, "data": base64.b64encode(d).decode(), "folder": folder} for n, d in files.items()]
    await page.evaluate("""([selector, files]) => {
      const dt = new DataTransfer();
      for (const f of files) {
        const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
        const file = new File([bytes], f.name, { type: f.name.endsWith(".txt") ? "text/plain" : "image/*" });
        if (f.folder) Object.defineProperty(file, "webkitRelativePath", { value: `${f.folder}/${f.name}` });
        dt.items.add(file);
      }
      const target = document.querySelector(selector);
      target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
      target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""", [selector, payload])


def polyline_points(value: str | None) -> int:
    return len((value or "").split())


# ---- Datasets ------------------------------------------------------------------------------------
async def test_upload_by_drag_and_drop_checked_and_resumed(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    # an earlier upload of this dataset got one file across before the tab closed
    first = jpeg((200, 30, 30))
    await seeded.app.uploads.put("dogs", "a.jpg", first)
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded)
    puts: list[str] = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    await root.locator('[data-tab="datasets"]').click()
    await root.locator('input[aria-label="New dataset name"]').fill("dogs")
    files = {"a.jpg": first, "b.png": png_bytes((30, 200, 30)), "a.txt": b"sks dog on grass",
             "fake.jpg": b"%PDF-1.4 this is a document" * 20, "notes.pdf": b"%PDF"}
    await drop_files(page, "[data-drop]", files)
    progress = root.locator("[data-upload-progress]")
    await expect(progress).to_contain_text("5/5 files")
    await expect(progress).to_contain_text("1 already there (resumed)")
    await expect(progress).to_contain_text("3 staged for dogs")
    refused = root.locator("[data-refused]")
    await expect(refused.locator('[data-file="fake.jpg"]')).to_contain_text("fake.jpg:")
    await expect(refused.locator('[data-file="notes.pdf"]')).to_contain_text("not an image")
    assert sorted(u.rsplit("/", 1)[-1].split("?")[0] for u in puts) == ["a.txt", "b.png", "fake.jpg"]  # a.jpg was there
    await shot(page, "datasets-upload")

    save = root.locator('[data-action="publish-upload"]')
    await save.click()
    await expect(save).to_have_text("Save now?")
    await save.click()
    await expect(root.locator('[data-dataset="dogs"]')).to_contain_text("2 images · 1 captioned")
    assert seeded.storage.read_bytes("datasets/dogs/a.txt") == b"sks dog on grass"
    assert seeded.storage.exists("datasets/dogs/dataset.json") and not seeded.storage.exists("datasets/dogs/fake.jpg")
    assert errors == []


async def test_edit_a_caption_see_it_in_the_bucket_conflict_and_undo(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded)
    await root.locator('[data-tab="datasets"]').click()
    card = root.locator('[data-dataset="cats"]')
    await card.locator(".lcl-link").click()
    fig = card.locator('[data-file="002.png"]')
    await fig.locator("figcaption").click()
    area = fig.locator('textarea[aria-label="Caption of 002.png"]')
    await area.fill("sks cat asleep on a red sofa")
    await area.press("Enter")
    await expect(fig.locator("figcaption")).to_have_text("sks cat asleep on a red sofa")
    assert seeded.storage.read_bytes("datasets/cats/002.txt") == b"sks cat asleep on a red sofa\n"
    await shot(page, "datasets-captions")

    # someone else (another laptop, the CLI) changes it; our next edit must not overwrite theirs
    seeded.storage.write_bytes("datasets/cats/002.txt", b"their caption\n")
    await fig.locator("figcaption").click()
    await area.fill("my stale edit")
    await fig.locator('[data-action="save-caption"]').click()
    await expect(fig.locator("[data-conflict]")).to_contain_text("changed by someone else")
    await expect(fig.locator("figcaption")).to_have_text("their caption")
    assert seeded.storage.read_bytes("datasets/cats/002.txt") == b"their caption\n"

    # now an edit over theirs, then undo brings theirs back (over the new generation)
    await fig.locator("figcaption").click()
    await area.fill("edited over theirs")
    await area.press("Enter")
    await expect(fig.locator("figcaption")).to_have_text("edited over theirs")
    undo = card.locator('[data-action="undo:cats"]')
    await expect(undo).to_have_text("Undo (2)")
    await undo.click()
    await expect(fig.locator("figcaption")).to_have_text("their caption")
    assert seeded.storage.read_bytes("datasets/cats/002.txt") == b"their caption\n"

    # validation of the stored dataset, before training
    await card.locator('[data-action="validate:cats"]').click()
    await expect(card.locator("[data-report]")).to_contain_text("2 images")
    assert errors == []


async def test_preparation_pipeline_to_a_saved_dataset(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    seeded.app.uploads.workers = 1  # in this process: the CPU is shared
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded, viewport=(1300, 1000))
    await root.locator('[data-tab="datasets"]').click()
    await root.locator('input[aria-label="New dataset name"]').fill("birds")
    await drop_files(page, "[data-drop]", {"red.jpg": jpeg((200, 10, 10)), "green.jpg": jpeg((10, 200, 10), (600, 900)),
                                           "blue.jpg": jpeg((10, 10, 200))}, folder="birds")
    await expect(root.locator("[data-upload-progress]")).to_contain_text("3 staged for birds")
    await root.locator('[data-action="open-prepare"]').click()
    dialog = page.locator('[data-dialog="prepare"]')
    await dialog.locator('select[aria-label="LoRA type to prepare for"]').select_option("style")
    await dialog.locator('input[aria-label="Trigger word"]').fill("brd")
    await dialog.locator('select[aria-label="Resolution"]').select_option("512")
    await dialog.locator('[data-action="run-prepare"]').click()
    items = dialog.locator("[data-review]")
    await expect(items).to_have_count(3)
    await expect(dialog.locator("[data-report]")).to_contain_text("Valid: 3 images")
    # each item shows the prepared crop and the original with the crop's frame
    await page.wait_for_function(
        "[...document.querySelectorAll('[data-review] img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=WAIT_MS)
    frame_style = await items.first.locator(".lcl-crop-frame").get_attribute("style")
    assert "width" in (frame_style or "")
    await shot(page, "datasets-prepare-review")
    names = [await items.nth(i).get_attribute("data-review") for i in range(3)]
    await items.nth(0).locator('input[type="checkbox"]').uncheck()
    await items.nth(1).locator("textarea").fill("brd, a green bird in tall grass")
    await dialog.locator('[data-action="save-review"]').click()
    await expect(dialog.locator("[data-saved]")).to_contain_text("Dataset birds created")
    keys = {o.key for o in seeded.storage.list("datasets/birds/").objects}
    assert f"datasets/birds/{names[0]}" not in keys and f"datasets/birds/{names[1]}" in keys
    caption = layout.dataset_prefix("birds") + names[1].rsplit(".", 1)[0] + ".txt"
    assert seeded.storage.read_bytes(caption) == b"brd, a green bird in tall grass\n"
    assert json.loads(seeded.storage.read_bytes("datasets/birds/dataset.json"))["settings"]["lora_type"] == "style"
    await dialog.locator('[data-action="close-dialog"]').click()
    await expect(root.locator('[data-dataset="birds"]')).to_contain_text("2 images · 2 captioned")
    assert errors == []


# ---- Training ------------------------------------------------------------------------------------
def estimate_usd(text: str) -> float:
    return float(text.split("$", 1)[1].split()[0])


async def test_edit_a_config_and_see_the_estimate_change(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded)
    await root.locator('[data-tab="training"]').click()
    editor = root.locator("[data-config-editor]")
    estimate = editor.locator("[data-estimate]")
    await expect(estimate).to_contain_text("$")
    await expect(editor).to_contain_text("2 images · trigger sks")
    before = estimate_usd(await estimate.inner_text())
    steps = editor.locator('input[aria-label="Steps"]')
    default_steps = int(await steps.get_attribute("placeholder"))
    await steps.fill(str(default_steps * 3))  # still typing: the estimate follows anyway
    await expect(editor.locator("[data-config-status]")).to_contain_text(f"{default_steps * 3} steps")
    after = estimate_usd(await estimate.inner_text())
    assert after > before
    await shot(page, "training-config")

    # a value the service refuses, with the CLI's rules: the field says why, no Train button
    await editor.locator('input[aria-label="Rank"]').fill("0")
    await expect(editor.locator('[data-field-error="rank"]')).to_contain_text("outside 1..512")
    await expect(editor.locator('[data-action="train-config"]')).to_have_count(0)
    await editor.locator('input[aria-label="Rank"]').fill("32")
    await expect(editor.locator("[data-estimate]")).to_contain_text("$")
    # another preset: its defaults
    await editor.locator('[data-preset="style"]').click()
    await expect(editor.locator('[data-preset="style"]')).to_have_class("lcl-btn lcl-btn-on")
    await expect(steps).to_have_value("")
    assert errors == []


def progress_events(run_id: str, points: list[tuple[int, float]], t0: float) -> bytes:
    events = [{"t": t0, "kind": "state", "state": "training"}]
    events += [{"t": t0 + i, "kind": "progress", "step": s, "loss": loss} for i, (s, loss) in enumerate(points)]
    return "".join(json.dumps(e) + "\n" for e in events).encode()


async def test_reload_during_a_run_brings_the_loss_graph_back(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    points = [(s, 1.0 / (1 + s / 50)) for s in range(25, 250, 25)]  # 9 points before step 250
    seeded.storage.write_bytes(layout.run_key("run-1", "events.jsonl"), progress_events("run-1", points, NOW - 900))
    broadcaster = Broadcaster()
    loop = asyncio.get_running_loop()
    seeded.app.sink = lambda e, d: loop.call_soon_threadsafe(broadcaster.send, e, d)
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded, broadcaster)
    await root.locator('[data-tab="training"]').click()
    line = root.locator('[data-run="run-1"] svg.lcl-loss polyline')
    await expect(line).to_have_count(1)
    await page.wait_for_function(
        "(document.querySelector('[data-run=\"run-1\"] svg.lcl-loss polyline')?.getAttribute('points') || '')"
        ".split(' ').length >= 10", timeout=WAIT_MS)  # 9 from the events + the status's step 250

    await page.reload()
    await page.wait_for_function("window.__shimReady === true", timeout=WAIT_MS)
    await page.click('button[aria-label^="LoRA Cloud"]')
    await root.locator('[data-tab="training"]').click()
    await page.wait_for_function(
        "(document.querySelector('[data-run=\"run-1\"] svg.lcl-loss polyline')?.getAttribute('points') || '')"
        ".split(' ').length >= 10", timeout=WAIT_MS)
    await shot(page, "training-live")

    # the run finishes: a notification arrives as a toast (once), and the card says done
    status = RunStatus(run_id="run-1", state=RunState.DONE, step=1000, total_steps=1000, loss=0.05, updated_at=NOW)
    seeded.storage.write_bytes(layout.run_key("run-1", "status.json"), json.dumps(status.to_dict()).encode())
    seeded.app.notify.core.clock = lambda: NOW + 60
    seeded.app.emit(RUN_EVENT, (await seeded.app.runs.get("run-1")).to_dict())
    assert await asyncio.to_thread(seeded.app.notify.flush, 30)
    await expect(page.locator(".toast-success")).to_contain_text("LoRA ready: cat-v1")
    await expect(root.locator('[data-run="run-1"] .lcl-badge')).to_have_text("done")
    seeded.app.emit(RUN_EVENT, (await seeded.app.runs.get("run-1")).to_dict())
    assert await asyncio.to_thread(seeded.app.notify.flush, 30)
    await page.wait_for_timeout(300)
    await expect(page.locator(".toast-success")).to_have_count(1)
    assert errors == []


async def test_compare_two_runs(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    for run_id, rank, color in (("run-1", 16, (10, 10, 200)), ("run-2", 32, (200, 120, 10))):
        spec = {"run_id": run_id, "dataset": "cats", "lora_type": "character", "lora_name": f"cat-r{rank}",
                "trigger": "sks", "vram_gb": 24.0, "overrides": {"network_dim": rank, "network_alpha": float(rank)}}
        seeded.storage.write_bytes(layout.run_key(run_id, "spec.json"), json.dumps(spec).encode())
        seeded.storage.write_bytes(layout.run_key(run_id, f"samples/cat-r{rank}_000250_00_20261115110000.png"),
                                   png_bytes(color, (64, 64)))
        pts = [(s, (0.3 if rank == 16 else 0.25) / (1 + s / 100)) for s in range(25, 275, 25)]
        seeded.storage.write_bytes(layout.run_key(run_id, "events.jsonl"), progress_events(run_id, pts, NOW - 5000))
    seeded.state.put_run(Run(id="run-2", dataset="cats", preset="character", lora_name="cat-r32", state=RunState.DONE,
                             gpu="RTX 4090", created_at=NOW - 86400))
    done = RunStatus(run_id="run-2", state=RunState.DONE, step=1000, total_steps=1000, loss=0.07, updated_at=NOW - 80000)
    seeded.storage.write_bytes(layout.run_key("run-2", "status.json"), json.dumps(done.to_dict()).encode())
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded, viewport=(1300, 1000))
    await root.locator('[data-tab="training"]').click()
    # history with filters: the done run is a row; filter by state
    await expect(root.locator('[data-run-row="run-2"]')).to_contain_text("cat-r32")
    await root.locator('select[aria-label="Filter runs by state"]').select_option("done")
    await expect(root.locator('[data-run="run-1"]')).to_have_count(0)
    await root.locator('select[aria-label="Filter runs by state"]').select_option("all")
    await root.locator('[data-compare="run-1"]').check()
    await root.locator('[data-compare="run-2"]').check()
    await shot(page, "training-history")
    await root.locator('[data-action="compare"]').click()
    dialog = page.locator('[data-dialog="compare"]')
    await expect(dialog.locator("svg.lcl-loss polyline")).to_have_count(2)
    await expect(dialog.locator('polyline[data-series="run-2"]')).to_have_count(1)
    row = dialog.locator('[data-sample-key="step 250 · prompt 0"]')
    await expect(row.locator("img")).to_have_count(2)
    diff = dialog.locator('[data-compare-config] [data-config-key="network_dim"]')
    await expect(diff).to_have_class("lcl-diff")
    await expect(diff).to_contain_text("16")
    await expect(diff).to_contain_text("32")
    assert await dialog.locator('[data-compare-config] [data-config-key="learning_rate"]').count() == 0  # the same
    await page.wait_for_function(
        "[...document.querySelectorAll('[data-compare-samples] img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=WAIT_MS)
    await shot(page, "training-compare")
    assert errors == []


async def test_notification_channels_and_a_test_toast(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    broadcaster = Broadcaster()
    loop = asyncio.get_running_loop()
    seeded.app.sink = lambda e, d: loop.call_soon_threadsafe(broadcaster.send, e, d)
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded, broadcaster)
    block = root.locator('[data-section="notify"]')
    await expect(block.locator('[data-notify="notify_webhook"]')).to_be_disabled()  # no webhook_url set
    await expect(block).to_contain_text("lora-cloud config set webhook_url")
    for _ in range(200):
        if broadcaster.sockets:
            break
        await asyncio.sleep(0.05)
    assert broadcaster.sockets, "the page never opened its websocket"
    await block.locator('[data-action="notify-test"]').click()
    await expect(page.locator(".toast-info")).to_contain_text("LoRA Cloud test notification")
    await shot(page, "instances")
    # the checkbox unticks at once; the settings change when the POST has been answered
    async with page.expect_response(lambda r: r.url.endswith("/notify/settings")):
        await block.locator('[data-notify="notify_toast"]').uncheck()
    await expect(block.locator('[data-notify="notify_toast"]')).not_to_be_checked()
    assert "notify_toast = false" in (seeded.settings.home / "config.toml").read_text()
    assert seeded.app.settings.notify_toast is False
    assert errors == []


async def test_a_guard_problem_reaches_the_user_as_a_warning(browser, aiohttp_server, tmp_path, clean_env):
    """The guard works around a damaged settings file, but the ComfyUI user must hear of it: the
    problem the guard announces (once, service/guard/guard.py) is a warning toast."""
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    broadcaster = Broadcaster()
    loop = asyncio.get_running_loop()
    seeded.app.sink = lambda e, d: loop.call_soon_threadsafe(broadcaster.send, e, d)
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded, broadcaster)
    for _ in range(200):
        if broadcaster.sockets:
            break
        await asyncio.sleep(0.05)
    assert broadcaster.sockets, "the page never opened its websocket"
    message = "config.toml: cannot read config.toml; in force: its last good copy"
    seeded.app.emit(GUARD_EVENT, {"kind": "problem", "problem": "settings", "subject": "config.toml",
                                  "message": message})
    await expect(page.locator(".toast-warn")).to_contain_text(message)
    seeded.app.emit(GUARD_EVENT, {"kind": "resolved", "message": "not a problem"})  # only problems are shown
    await page.wait_for_timeout(300)
    await expect(page.locator(".toast-warn")).to_have_count(1)
    assert errors == []
