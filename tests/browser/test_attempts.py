"""The run card of a preempted run in Chromium: its badge, one line per attempt and the time lost."""

from __future__ import annotations

import json

from comfy_lora_cloud.storage import layout

from tests.browser.conftest import Broadcaster, build_app, open_sidebar
from tests.comfy.conftest import NOW, seed, write_status

WAIT_MS = 20_000  # an upper bound for a slow shared CPU, not a timing assertion


async def test_a_moved_run_shows_its_attempts(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    seeded = seed(tmp_path, clean_env)
    events = [  # what start, two trainers and the guard's recovery write
        {"t": NOW - 3000, "kind": "attempt", "n": 1, "gpu": "RTX 4090", "dph": 0.21, "interruptible": True},
        {"t": NOW - 2990, "kind": "started", "instance": "77"},
        {"t": NOW - 2980, "kind": "state", "state": "training"},
        {"t": NOW - 1200, "kind": "preempted", "instance": "77", "step": 250, "checkpoint_step": 200},
        {"t": NOW - 1100, "kind": "attempt", "n": 2, "gpu": "<b>RTX 3090</b>", "dph": 0.15, "interruptible": False},
        {"t": NOW - 1000, "kind": "started", "instance": "78"},
        {"t": NOW - 990, "kind": "resumed", "step": 200, "instance": "78"},
        {"t": NOW - 900, "kind": "state", "state": "training"},
    ]
    seeded.storage.write_bytes(layout.run_key("run-1", "events.jsonl"),
                               "".join(json.dumps(e) + "\n" for e in events).encode())
    write_status(seeded.storage, step=300, loss=0.1, sec_per_step=2.0, updated_at=NOW - 5)

    server = await aiohttp_server(build_app(lambda: seeded.app, Broadcaster()))
    sidebar = await open_sidebar(browser, str(server.make_url("/")), width=900, height=1000, wait_ms=WAIT_MS)
    page, page_errors = sidebar.page, sidebar.errors
    await page.locator('.lcl-root [data-tab="training"]').click()

    block = page.locator('.lcl-root [data-attempts="run-1"]')
    await expect(block.locator("li")).to_have_count(2)
    await expect(block.locator('[data-attempt="1"]')).to_contain_text("RTX 4090 $0.210/hr interruptible")
    await expect(block.locator('[data-attempt="1"]')).to_contain_text("instance 77 · steps 0–250")
    await expect(block.locator('[data-attempt="1"]')).to_contain_text("preempted")
    await expect(block.locator('[data-attempt="2"]')).to_contain_text("<b>RTX 3090</b>")  # bucket text stays text
    await expect(block.locator('[data-attempt="2"]')).to_contain_text("on-demand · instance 78 · steps 200–300")
    # 300 s down (preempted at -1200, training again at -900) + 50 steps again at 2 s
    await expect(block).to_contain_text("1 preemption(s) · 6m 40s lost (50 steps again)")
    assert await block.locator("b").count() == 0
    assert page_errors == []
