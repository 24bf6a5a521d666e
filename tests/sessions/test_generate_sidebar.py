"""The sidebar's Generate section in Chromium over the real routes, with a real session on the
stack of conftest.py: start (two clicks, a JSON POST with the token), status and cost while it
starts and once ready, Open (the remote ComfyUI through the tunnel, in a new tab), the gallery of
outputs from the bucket, the template loader (into the canvas), and Stop."""

from __future__ import annotations

import json

from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.comfy.token import TOKEN_FILE
from comfy_lora_cloud.service.templates.workflow_api import prepare
from tests.browser.conftest import Broadcaster, browser, build_app, chromium_path, open_sidebar  # noqa: F401
from tests.sessions.conftest import flux_workflow, wait_for

WAIT_MS = 60_000  # an upper bound for a slow shared CPU, not a timing assertion


async def test_generate_section_end_to_end(stack, browser, aiohttp_server, monkeypatch):  # noqa: F811
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    for key, value in stack.env.items():
        if key.startswith("LORA_CLOUD_") or key == "STORAGE_EMULATOR_HOST":
            monkeypatch.setenv(key, value)
    broadcaster = Broadcaster()
    app = App.open(emit=broadcaster.send)
    server = await aiohttp_server(build_app(lambda: app, broadcaster))
    sidebar = await open_sidebar(browser, str(server.make_url("/")), wait_ms=WAIT_MS)
    page, errors, posts = sidebar.page, sidebar.errors, sidebar.posts
    await page.click('[data-tab="generate"]')
    section = page.locator('[data-section="generate"]')
    await expect(section).to_contain_text("No remote ComfyUI running")

    # start: a second click rents
    start = section.locator('[data-action="start-session"]')
    await section.locator('input[aria-label="Idle minutes before the session stops"]').fill("10")
    await start.click()
    await expect(start).to_have_text("Rent a GPU?")
    assert stack.live_instances() == []
    await start.click()
    state = section.locator("[data-session-state]")
    await expect(state).to_have_text("ready")  # it starts, then the background wait sees ComfyUI answer
    await expect(section.locator("[data-session-cost]")).to_contain_text("/hr · spent $")
    [inst] = stack.live_instances()
    [req] = [r for r in posts if r.url.endswith("/lora_cloud/api/sessions")]
    assert json.loads(req.post_data) == {"idle_minutes": 10}
    assert req.headers["x-lora-cloud-token"] == (app.settings.home / TOKEN_FILE).read_text()
    sid = (await app.sessions.current()).id

    # open: the remote ComfyUI through this process's tunnel, in a new tab
    async with page.context.expect_page() as popup:
        await section.locator(f'[data-action="open:{sid}"]').click()
    remote = await popup.value
    await remote.wait_for_load_state()
    await expect(remote).to_have_title("ComfyUI")
    assert remote.url.startswith("http://127.0.0.1:") and str(stack.remote_port) not in remote.url

    # a generation (as the node or `comfy run` would do) lands in the gallery
    result = await app.sessions.generate(prepare(flux_workflow(prefix="gallery/pic"), lora="first"), lora="first")
    assert len(result.images) == 1
    wait_for(lambda: stack.storage.exists(f"outputs/{sid}/gallery_pic_00001_.png.json"), what="the output")
    await section.locator('[data-action="refresh-generate"]').click()
    img = section.locator("[data-gallery] img")
    await expect(img).to_have_count(1)
    await page.wait_for_function(
        "[...document.querySelectorAll('[data-gallery] img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=WAIT_MS)

    # the template loader opens a template in the canvas
    await section.locator('[data-action="template:basic_txt2img"]').click()
    await page.wait_for_function("window.__loadedGraph && window.__loadedGraph.nodes.length > 0", timeout=WAIT_MS)

    # stop: billing ends
    await section.locator(f'[data-action="stop-session:{sid}"]').click()
    await expect(section).to_contain_text("No remote ComfyUI running")
    assert stack.live_instances() == [] and stack.fake.state.get(inst.id) is None
    assert errors == []
