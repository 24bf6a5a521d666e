"""Issue 10 in Chromium: a rented host writes HTML and SVG "samples" into the bucket; none of it
ever runs script in the sidebar's origin.

The hostile files call ``/pwned-beacon`` and set ``window.__pwned`` if they run. The test shows the
sidebar, clicks the sample links, navigates straight to each hostile file and embeds each one in
the sidebar's page as img, iframe, object and embed; then the beacon must never have been hit.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.browser.conftest import Broadcaster, build_app, open_sidebar
from tests.comfy import hostile
from tests.comfy.conftest import seed

WAIT_MS = 20_000  # an upper bound for a slow shared CPU, not a timing assertion
HOSTILE = ["x.html", "x.svg", "evil.png", "evil.svg.png", "x.xml", "x.xhtml"]


async def test_hostile_samples_never_run_script(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    seeded = seed(tmp_path, clean_env)
    for name, body in hostile.SAMPLE_FILES.items():
        hostile.put(seeded.storage.root, f"runs/run-1/samples/{name}", body)
    hostile.put(seeded.storage.root, "datasets/<img src=x onerror=fetch('/pwned-beacon')>/1.png",
                hostile.png_claiming(8, 8))

    beacon: list[str] = []

    async def pwned(request: web.Request) -> web.Response:
        beacon.append(str(request.rel_url))
        return web.Response(text="")

    app = build_app(lambda: seeded.app, Broadcaster())
    app.router.add_get("/pwned-beacon", pwned)
    server = await aiohttp_server(app)
    context = await browser.new_context(accept_downloads=True)
    sidebar = await open_sidebar(context, str(server.make_url("/")), width=1280, height=720, wait_ms=WAIT_MS)
    page, page_errors, root = sidebar.page, sidebar.errors, sidebar.root
    await root.locator('[data-tab="training"]').click()

    # the run shows its one real sample; the hostile files are not listed
    samples = root.locator('[data-run="run-1"] .lcl-samples img')
    await expect(samples).to_have_count(1)
    assert await samples.get_attribute("alt") == "s_0250.png"
    # the listing's problem (a dataset named like markup) is a warning made of text
    warning = root.locator("[data-problems]")
    await expect(warning).to_contain_text("could not be read")
    await warning.locator("summary").click()
    await expect(warning).to_contain_text("onerror=fetch")
    assert await warning.locator("img").count() == 0

    # the real sample opens in a new tab, as an image
    async with page.expect_popup() as popup_info:
        await root.locator('[data-run="run-1"] .lcl-samples a').click()
    popup = await popup_info.value
    await popup.wait_for_load_state()
    assert await popup.evaluate("document.contentType") == "image/png"
    await popup.close()

    # each hostile file, opened directly: a download, never a document in this origin
    for name in HOSTILE:
        url = str(server.make_url(f"/api/lora_cloud/api/runs/run-1/samples/{name}"))
        tab = await context.new_page()
        download = asyncio.ensure_future(tab.wait_for_event("download", timeout=10_000))
        try:
            await tab.goto(url)
        except PlaywrightError:
            pass  # "Download is starting": the navigation became a download, as it should
        try:
            suggested = (await download).suggested_filename
        except PlaywrightError:
            raise AssertionError(f"{name} was shown as {await tab.evaluate('document.contentType')}, not "
                                 f"downloaded; beacon hits: {beacon}") from None
        assert suggested.replace("_", ".").endswith(name.rsplit(".", 1)[-1])
        await tab.close()

    # embedded in the sidebar's own page, every way a page can embed a file
    await page.evaluate("""(names) => {
        for (const name of names) {
            const url = `/api/lora_cloud/api/runs/run-1/samples/${encodeURIComponent(name)}`;
            for (const [tag, attr] of [["img", "src"], ["iframe", "src"], ["object", "data"], ["embed", "src"]]) {
                const el = document.createElement(tag);
                el.setAttribute(attr, url);
                el.className = "hostile-embed";
                document.body.append(el);
            }
        }
    }""", HOSTILE)
    await page.wait_for_function(
        "[...document.querySelectorAll('img.hostile-embed')].every(i => i.complete)", timeout=WAIT_MS)
    await asyncio.sleep(1.0)  # let any frame that would run script do so before looking
    assert beacon == []
    assert await page.evaluate("window.__pwned") is None
    for frame in page.frames:
        assert await frame.evaluate("window.__pwned === undefined"), frame.url
    assert page_errors == []
    await context.close()
