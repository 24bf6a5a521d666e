"""The sidebar in Chromium: instances and a live run appear, stop and destroy work with the token
and JSON, state survives switching tabs, budget warnings toast, captions with HTML stay text."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path


from comfy_lora_cloud.comfy.events import EventPoller
from comfy_lora_cloud.comfy.token import TOKEN_FILE
from comfy_lora_cloud.models import Cost
from comfy_lora_cloud.service.guard.watchdog import Watchdog
from comfy_lora_cloud.service.money import Budgets
from comfy_lora_cloud.service.money.charges import SuspectCharge

from tests.browser.conftest import Broadcaster, build_app, open_sidebar
from tests.comfy.conftest import HTML_CAPTION, NOW, SECRETS, seed, write_status
from tests.comfy.vast_helpers import launch_for, provider_factory_for, vast  # noqa: F401

KEY = SECRETS["vast_api_key"]
WAIT_MS = 20_000  # an upper bound for a slow shared CPU, not a timing assertion


async def _launch_for(open_provider, clock, run_id):
    inst = await launch_for(open_provider, clock, run_id)
    inst.created_at = NOW - 3600  # the fake's clock is not the service's
    return inst


def _record(state, inst) -> None:
    state.put_instance(inst, run_id="run-1", seen_at=NOW - 3600)  # launched an hour ago, on our clock


async def test_sidebar_end_to_end(browser, aiohttp_server, tmp_path, clean_env, vast):
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    fake, clock = vast
    seeded = seed(tmp_path, clean_env)
    open_provider = provider_factory_for(fake)
    seeded.app.providers["vast"] = open_provider
    inst = await _launch_for(open_provider, clock, "run-1")
    seeded.state.mark_instance_destroyed("vast", "77", at=NOW - 1800)  # the seed's placeholder
    _record(seeded.state, inst)
    iid = str(inst.id)
    # the last /charges/ answer had an absurd row for the destroyed placeholder (service/money/costs.py:cap_charges)
    seeded.state.set_kv("ledger:charged:77", json.dumps({"billed": 1.0, "at": NOW, "suspect": [
        SuspectCharge("77", 1e9, 1.0, 0.4, 0.0).to_dict()]}))

    broadcaster = Broadcaster()
    server = await aiohttp_server(build_app(lambda: seeded.app, broadcaster))
    sidebar = await open_sidebar(browser, str(server.make_url("/")), height=1100, wait_ms=WAIT_MS,
                                 record=("POST", "DELETE"))
    page, page_errors, mutations, root = sidebar.page, sidebar.errors, sidebar.posts, sidebar.root

    # instances and runs appear from the routes
    card = root.locator(f'[data-instance="{iid}"]')
    await expect(card).to_contain_text("RTX 4090")
    await expect(card.locator(".lcl-badge")).to_have_text("running")
    await expect(card).to_contain_text("/hr · up 1h 00m")
    await expect(root.locator('[data-cost="month"]')).to_contain_text("$1.20 of $50.00")
    await expect(root.locator('[data-cost="suspect"]')).to_contain_text(
        "instance 77 billed $1000000000.00, counted $1.00")
    await expect(root.locator('[data-tab="instances"] .lcl-tab-badge')).to_have_text("1")
    await root.locator('[data-tab="training"]').click()
    await expect(root.locator('[data-progress="run-1"]')).to_contain_text("step 250/1000")
    await expect(root.locator('[data-run="run-1"] .lcl-samples img')).to_have_count(1)
    await expect(page.locator(".lora-cloud-tab-button .badge")).to_have_text("1")

    # a live step arrives over the websocket, through the real poller
    for _ in range(200):
        if broadcaster.sockets:
            break
        await asyncio.sleep(0.05)
    assert broadcaster.sockets, "the page never opened its websocket"
    write_status(seeded.storage, step=400, loss=0.09, eta_seconds=600, updated_at=NOW + 10)
    poller = EventPoller(seeded.app, broadcaster.send)
    assert "lora_cloud.run" in await poller.poll_once()
    await expect(root.locator('[data-progress="run-1"]')).to_contain_text("step 400/1000")
    await expect(root.locator('[data-progress="run-1"]')).to_contain_text("loss 0.0900")
    await expect(root.locator('[data-run="run-1"] svg.lcl-loss polyline')).to_have_count(1)

    # state survives switching tabs (render gets a fresh element each time)
    await page.click('button[aria-label="Queue"]')
    await expect(root).to_have_count(0)
    await page.click('button[aria-label^="LoRA Cloud"]')
    await expect(root.locator('[data-progress="run-1"]')).to_contain_text("step 400/1000")
    await expect(root.locator('[data-run="run-1"] svg.lcl-loss polyline')).to_have_count(1)

    # typing a new monthly budget is not disturbed by live events; Save persists it
    await root.locator('[data-tab="instances"]').click()
    budget = root.locator('input[aria-label="Monthly budget in dollars"]')
    await budget.fill("75")
    write_status(seeded.storage, step=410, loss=0.088, eta_seconds=590, updated_at=NOW + 11)
    assert "lora_cloud.run" in await poller.poll_once()
    await page.wait_for_timeout(300)  # give a (wrong) repaint the chance to wipe the field
    await expect(budget).to_have_value("75")
    await root.locator('[data-action="budget"]').click()
    await expect(root.locator('[data-cost="month"]')).to_contain_text("of $75.00")
    await root.locator('[data-tab="training"]').click()
    await expect(root.locator('[data-progress="run-1"]')).to_contain_text("step 410/1000")
    await root.locator('[data-tab="instances"]').click()
    assert seeded.app.settings.max_month_usd == 75.0
    await budget.fill("50")
    await root.locator('[data-action="budget"]').click()
    await expect(root.locator('[data-cost="month"]')).to_contain_text("of $50.00")

    # a budget warning becomes a toast: the guard's watchdog tells it through the app's sink (the
    # websocket, as ComfyUI's wiring gives it); the event poller sends no budget event of its own
    seeded.app.sink = broadcaster.send
    seeded.state.add_cost(Cost("50", "run-0", "charge", 39.0, NOW - 60, NOW - 60))
    async with seeded.app.provider("local")() as provider:
        await Watchdog(provider, seeded.state, Budgets.from_settings(seeded.app.settings), clock=lambda: NOW,
                       emit=seeded.app.emit, memory=seeded.app.guard_memory).poll_once([])
    assert "lora_cloud.budget" not in await poller.poll_once()
    await expect(page.locator(".toast-warn")).to_contain_text("80%")  # one toast for one crossing
    await page.wait_for_timeout(300)
    assert await page.locator(".toast-warn").count() == 1

    # a caption with HTML in it is shown as text
    await root.locator('[data-tab="datasets"]').click()
    await root.locator('[data-dataset="cats"] .lcl-link').click()
    caption = root.locator('[data-dataset="cats"] figcaption').first
    await expect(caption).to_have_text(HTML_CAPTION)
    assert await caption.locator("b, img").count() == 0
    assert await page.evaluate("window.__pwned") is None
    thumbs = root.locator('[data-dataset="cats"] figure img')
    await expect(thumbs).to_have_count(2)
    await page.wait_for_function(
        "[...document.querySelectorAll('[data-dataset=\"cats\"] figure img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=WAIT_MS)

    # logs, fetched through the provider and shown as text
    await root.locator('[data-tab="instances"]').click()
    await card.locator(f'[data-action="logs:{iid}"]').click()
    await expect(card.locator("pre.lcl-logs")).to_contain_text("container started")

    # stop: a JSON POST carrying the token
    await card.locator(f'[data-action="stop:{iid}"]').click()
    await expect(card.locator(".lcl-badge")).to_have_text("stopped")
    token = (seeded.settings.home / TOKEN_FILE).read_text()
    [stop] = [r for r in mutations if r.url.endswith(f"/instances/{iid}/stop")]
    assert stop.url.startswith(str(server.make_url("/api/lora_cloud/api/")))
    assert stop.headers["content-type"] == "application/json"
    assert stop.headers["x-lora-cloud-token"] == token
    assert stop.post_data == "{}"
    assert fake.state.get(int(iid)).intended == "stopped"

    shot = Path(os.environ.get("SIDEBAR_SCREENSHOT") or tmp_path / "sidebar.png")
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # destroy needs a second click
    destroy = card.locator(f'[data-action="destroy:{iid}"]')
    await destroy.click()
    await expect(destroy).to_have_text("Really destroy?")
    assert fake.state.get(int(iid)) is not None
    await destroy.click()
    await expect(card).to_have_count(0)
    assert fake.state.get(int(iid)) is None

    # stopping a run: two clicks, a JSON POST with the token; the run ends in the sidebar
    inst2 = await _launch_for(open_provider, clock, "run-1")
    _record(seeded.state, inst2)
    await root.locator('button[title="Refresh"]').click()
    await root.locator('[data-tab="training"]').click()
    stop_run = root.locator('[data-action="stop-run:run-1"]')
    await stop_run.click()
    await expect(stop_run).to_contain_text("Stop?")
    await stop_run.click()
    await expect(root.locator('[data-run="run-1"] .lcl-badge')).to_have_text("stopped")
    await expect(stop_run).to_have_count(0)
    [req] = [r for r in mutations if r.url.endswith("/runs/run-1/stop")]
    assert req.headers["x-lora-cloud-token"] == token and req.headers["content-type"] == "application/json"
    assert fake.state.get(int(inst2.id)) is None

    # quick launch: pick a dataset and a type, confirm; this install's data is in a local folder,
    # which a rented GPU cannot reach, so the answer is a clear error and nothing is rented
    await root.locator('[data-tab="instances"]').click()
    quick = root.locator("[data-quick-launch]")
    await quick.locator('select[aria-label="LoRA type"]').select_option("style")
    train = quick.locator('[data-action="launch"]')
    await train.click()
    await expect(train).to_have_text("Rent a GPU?")
    await train.click()
    await expect(page.locator(".toast-error")).to_contain_text("cannot reach a local folder")
    [launch] = [r for r in mutations if r.url.endswith("/lora_cloud/api/runs")]
    assert json.loads(launch.post_data) == {"dataset": "cats", "lora_type": "style"}
    assert launch.headers["x-lora-cloud-token"] == token
    assert [r.id for r in seeded.state.list_runs()] == ["run-1"] and fake.state.created_count == 2

    assert "null" not in await root.inner_text() and "undefined" not in await root.inner_text()
    assert page_errors == []
    text = await page.content()
    assert all(secret not in text for secret in SECRETS.values())
