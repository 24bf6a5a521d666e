"""The LoRA card in Chromium: it says what made the LoRA, its test prompt is prefilled with the
trigger word, Test renders through a ComfyUI queue and the card shows the image; Compare strengths
sends the edited prompt as a lora_comparison. (The ComfyUI is the fake, tests/fakes/comfyui.py: Flux
cannot run here; the real ComfyUI side is tests/integration/test_comfyui_templates.py.)"""

from __future__ import annotations

import json

from comfy_lora_cloud.comfy.token import HEADER
from comfy_lora_cloud.storage import layout
from tests.browser.conftest import Broadcaster, build_app, open_sidebar
from tests.comfy.conftest import safetensors_bytes, seed
from tests.fakes.comfyui import FakeComfyUI

WAIT_MS = 20_000  # an upper bound for a slow shared CPU, not a timing assertion
SIDECAR = {"run_id": "run-9", "dataset": "cats", "images": 12, "trigger": "sks cat", "lora_type": "character",
           "steps": 960, "rank": 16, "alpha": 16.0, "final_loss": 0.0871, "cost_usd": 1.234,
           "date": "2026-09-21T14:13:20Z"}


async def test_lora_card_test_button_shows_the_image(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    seeded = seed(tmp_path, clean_env)
    seeded.storage.write_bytes(layout.lora_key("sks-cat"), safetensors_bytes({"ss_network_dim": "16"}))
    seeded.storage.write_bytes(layout.lora_meta_key("sks-cat"), json.dumps(SIDECAR).encode())
    comfy = FakeComfyUI(tmp_path / "comfy-out")
    comfy_server = await aiohttp_server(comfy.app())
    seeded.app.templates.local_url = str(comfy_server.make_url("")).rstrip("/")
    server = await aiohttp_server(build_app(lambda: seeded.app, Broadcaster()))

    sidebar = await open_sidebar(browser, str(server.make_url("/")), height=1400, wait_ms=WAIT_MS)
    page, page_errors, posts = sidebar.page, sidebar.errors, sidebar.posts
    await page.click('.lcl-root [data-tab="loras"]')
    card = page.locator('.lcl-root [data-lora="sks-cat"]')

    # what made it
    facts = card.locator('[data-lora-facts="sks-cat"]')
    for text in ('trigger "sks cat"', "dataset cats (12 images)", "960 steps", "rank 16", "loss 0.0871", "$1.23",
                 "2026-09-21", "run run-9"):
        await expect(facts).to_contain_text(text)

    # the prompt is prefilled with the trigger word; one click renders and the card shows the image
    prompt = card.locator('input[aria-label="Test prompt for sks-cat"]')
    await expect(prompt).to_have_value("photo of sks cat, portrait, natural window light, 85mm, sharp focus")
    await card.locator('[data-action="test:sks-cat"]').click()
    await expect(card.locator('[data-test-state="sks-cat"]')).to_have_text("test done")
    image = card.locator('img[data-test-image="sks-cat"]')
    await expect(image).to_be_visible()
    await page.wait_for_function(
        "(() => { const i = document.querySelector('img[data-test-image=\"sks-cat\"]');"
        " return i && i.complete && i.naturalWidth === 128; })()", timeout=WAIT_MS)
    [first] = comfy.queued.values()
    [loader] = [n for n in first.prompt.values() if n["class_type"] == "LoraCloudLoraLoader"]
    assert loader["inputs"]["lora_name"] == "sks-cat"
    [test_post] = [r for r in posts if r.url.endswith("/loras/sks-cat/test")]
    assert test_post.headers["content-type"] == "application/json" and test_post.headers[HEADER.lower()]

    # Compare strengths with an edited prompt
    await prompt.fill("sks cat on the moon")
    await card.locator('[data-action="compare:sks-cat"]').click()
    await expect(card.locator('[data-test-state="sks-cat"]')).to_have_text("comparison done")
    await expect(prompt).to_have_value("sks cat on the moon")
    second = list(comfy.queued.values())[-1]
    assert len(comfy.queued) == 2
    assert "sks cat on the moon" in {n["inputs"].get("text") for n in second.prompt.values()}
    assert sorted(n["inputs"]["strength_model"] for n in second.prompt.values()
                  if n["class_type"] == "LoraCloudLoraLoader") == [0.0, 0.5, 0.75, 1.0]
    await page.wait_for_function(
        "(() => { const i = document.querySelector('img[data-test-image=\"sks-cat\"]');"
        f" return i && i.complete && i.naturalWidth > 0 && i.src.includes('{second.prompt_id}'); }})()",
        timeout=WAIT_MS)
    assert page_errors == []
