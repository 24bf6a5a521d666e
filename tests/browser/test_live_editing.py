"""Typing while the sidebar is live: run events arriving over the websocket repaint the sections
(patched, not rebuilt), so the caption being edited and the config field being typed in keep their
text, their caret and the focus."""

from __future__ import annotations

import asyncio

from comfy_lora_cloud.service.events import RUN_EVENT

from tests.browser.conftest import Broadcaster, build_app, open_sidebar
from tests.comfy.conftest import seed

WAIT_MS = 20_000  # an upper bound for a slow shared CPU, not a timing assertion


async def sidebar_with_socket(browser, aiohttp_server, seeded):
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    broadcaster = Broadcaster()
    server = await aiohttp_server(build_app(lambda: seeded.app, broadcaster))
    sidebar = await open_sidebar(browser, str(server.make_url("/")), wait_ms=WAIT_MS)
    for _ in range(200):
        if broadcaster.sockets:
            break
        await asyncio.sleep(0.05)
    assert broadcaster.sockets, "the page never opened its websocket"
    return sidebar, broadcaster


async def live_runs_arrive(broadcaster, root, first: int, count: int) -> None:
    """``count`` new live runs and a step of run-1, each over the socket; returns once the page
    painted them (the Training tab's badge counts live runs: run-1 and the new ones)."""
    from playwright.async_api import expect

    for n in range(first, first + count):
        broadcaster.send(RUN_EVENT, {"id": "run-1", "live": True, "state": "training", "step": 300 + n,
                                     "total_steps": 1000, "loss": 0.1})
        broadcaster.send(RUN_EVENT, {"id": f"live-{n}", "live": True, "state": "training", "dataset": "cats",
                                     "step": n, "total_steps": 100, "created_at": 1})
        await expect(root.locator('[data-tab="training"] .lcl-tab-badge')).to_have_text(str(n + 1))


async def focus_state(page) -> dict:
    return await page.evaluate("""() => {
      const el = document.activeElement;
      return { label: el.getAttribute("aria-label"), value: el.value, start: el.selectionStart, end: el.selectionEnd };
    }""")


async def test_a_caption_being_typed_survives_live_run_events(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    sidebar, broadcaster = await sidebar_with_socket(browser, aiohttp_server, seeded)
    page, root = sidebar.page, sidebar.root
    await root.locator('[data-tab="datasets"]').click()
    card = root.locator('[data-dataset="cats"]')
    await card.locator(".lcl-link").click()
    fig = card.locator('[data-file="002.png"]')
    await fig.locator("figcaption").click()
    area = fig.locator('textarea[aria-label="Caption of 002.png"]')
    await expect(area).to_be_focused()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("a cat on a sofa")
    for _ in range(5):
        await page.keyboard.press("ArrowLeft")  # the caret after "a cat on a"

    await live_runs_arrive(broadcaster, root, 1, 3)
    assert await focus_state(page) == {"label": "Caption of 002.png", "value": "a cat on a sofa",
                                       "start": 10, "end": 10}
    await page.keyboard.type(" red")
    await live_runs_arrive(broadcaster, root, 4, 1)
    await expect(area).to_have_value("a cat on a red sofa")
    await page.keyboard.press("Enter")
    await expect(fig.locator("figcaption")).to_have_text("a cat on a red sofa")
    assert seeded.storage.read_bytes("datasets/cats/002.txt") == b"a cat on a red sofa\n"
    await expect(fig.locator("figcaption button")).to_be_focused()  # focus back where the edit began

    # the large view is painted again on every change: the same there
    await card.locator('[data-action="large:cats"]').click()
    big = page.locator('[data-dialog="dataset:cats"] [data-file="001.png"]')
    await big.locator("figcaption").click()
    big_area = big.locator("textarea")
    await expect(big_area).to_be_focused()
    await page.keyboard.type(" in the sun")
    await page.keyboard.press("Control+Home")
    await live_runs_arrive(broadcaster, root, 5, 2)
    state = await focus_state(page)
    assert state["label"] == "Caption of 001.png" and state["value"].endswith(" in the sun")
    assert state["start"] == state["end"] == 0
    assert sidebar.errors == []


async def test_the_config_editor_keeps_what_is_typed_while_runs_arrive(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    sidebar, broadcaster = await sidebar_with_socket(browser, aiohttp_server, seeded)
    page, root = sidebar.page, sidebar.root
    await root.locator('[data-tab="training"]').click()
    editor = root.locator("[data-config-editor]")
    await expect(editor.locator("[data-estimate]")).to_contain_text("$")
    trigger = editor.locator('input[aria-label="Trigger word"]')
    await trigger.click()
    await page.keyboard.type("zkcat")
    await page.keyboard.press("ArrowLeft")
    await page.keyboard.press("ArrowLeft")
    await page.evaluate("""() => {
      window.__card = document.querySelector('[data-run="run-1"]');
      window.__sample = window.__card.querySelector('.lcl-samples img');
    }""")

    await live_runs_arrive(broadcaster, root, 1, 3)
    # run-1's card was updated where it changed, not built again: the same nodes, its sample not reloaded
    assert await page.evaluate("""() => document.querySelector('[data-run="run-1"]') === window.__card
      && window.__card.querySelector('.lcl-samples img') === window.__sample""")
    # the new runs' cards are in the same section, painted above nothing the user is in
    await expect(root.locator('[data-run="live-3"]')).to_contain_text("step 3/100")
    await expect(root.locator('[data-progress="run-1"]')).to_contain_text("step 303/1000")
    assert await focus_state(page) == {"label": "Trigger word", "value": "zkcat", "start": 3, "end": 3}
    await page.keyboard.type("X")
    await expect(trigger).to_have_value("zkcXat")
    # the estimate follows the edit while the field still has focus
    await expect(editor.locator("[data-config-status]")).to_contain_text("trigger zkcXat")
    await expect(trigger).to_be_focused()
    assert sidebar.errors == []
