"""The sidebar by keyboard, and its large views as modal dialogs: focus moves in, Tab stays
inside, Escape closes from anywhere and focus returns to the opener; a click on the backdrop of a
Prepare review keeps the review, and "Prepare…" resumes it. Captions, past runs and the section
tabs work from the keyboard alone."""

from __future__ import annotations

from comfy_lora_cloud.models import Run, RunState

from tests.browser.conftest import Broadcaster, build_app, open_sidebar
from tests.browser.test_dashboard import drop_files, jpeg
from tests.comfy.conftest import NOW, seed

WAIT_MS = 20_000  # an upper bound for a slow shared CPU, not a timing assertion


async def sidebar_for(browser, aiohttp_server, seeded, width=1300):
    from playwright.async_api import expect

    expect.set_options(timeout=WAIT_MS)
    server = await aiohttp_server(build_app(lambda: seeded.app, Broadcaster()))
    return await open_sidebar(browser, str(server.make_url("/")), width=width, height=1000, wait_ms=WAIT_MS)


async def active(page) -> dict:
    return await page.evaluate("""() => {
      const el = document.activeElement;
      return { action: el.getAttribute("data-action"), label: el.getAttribute("aria-label"),
               inDialog: !!el.closest("[data-dialog]"), tab: el.getAttribute("data-tab"),
               row: el.getAttribute("data-run-row"), tag: el.tagName };
    }""")


async def test_prepare_is_a_modal_dialog_that_keeps_its_review(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    seeded.app.uploads.workers = 1  # in this process: the CPU is shared
    sidebar = await sidebar_for(browser, aiohttp_server, seeded)
    page, root = sidebar.page, sidebar.root
    await root.locator('[data-tab="datasets"]').click()
    await root.locator('input[aria-label="New dataset name"]').fill("birds")
    await drop_files(page, "[data-drop]", {"red.jpg": jpeg((200, 10, 10), (300, 200)),
                                           "blue.jpg": jpeg((10, 10, 200), (300, 200))}, folder="birds")
    await expect(root.locator("[data-upload-progress]")).to_contain_text("2 staged for birds")

    # opened from the keyboard: focus moves into the dialog
    opener = root.locator('[data-action="open-prepare"]')
    await opener.focus()
    await page.keyboard.press("Enter")
    dialog = page.locator('[data-dialog="prepare"]')
    await expect(dialog).to_have_attribute("aria-modal", "true")
    assert (await active(page))["inDialog"]

    # Tab and Shift+Tab go round inside it, never to the sidebar behind
    for key in ["Tab"] * 9 + ["Shift+Tab"] * 9:
        await page.keyboard.press(key)
        assert (await active(page))["inDialog"], f"{key} left the dialog"

    # Escape from anywhere closes it, and focus is back on "Prepare…"
    await page.evaluate("document.activeElement.blur()")
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    assert (await active(page))["action"] == "open-prepare"

    # a review with work in it: one image unticked, one caption edited
    await page.keyboard.press("Enter")
    await dialog.locator('input[aria-label="Trigger word"]').fill("brd")
    await dialog.locator('[data-action="run-prepare"]').click()
    items = dialog.locator("[data-review]")
    await expect(items).to_have_count(2)
    names = [await items.nth(i).get_attribute("data-review") for i in range(2)]
    await items.nth(0).locator('input[type="checkbox"]').uncheck()
    await items.nth(1).locator("textarea").fill("brd, a blue bird")

    # a click on the backdrop closes the dialog and discards nothing
    await page.mouse.click(5, 5)
    await expect(dialog).to_have_count(0)
    await opener.click()
    await expect(items).to_have_count(2)
    await expect(dialog.locator(f'[data-review="{names[0]}"] input[type="checkbox"]')).not_to_be_checked()
    await expect(dialog.locator(f'[data-review="{names[1]}"] textarea')).to_have_value("brd, a blue bird")
    await expect(dialog.locator("[data-report]")).to_contain_text("Valid: 2 images")

    # and it saves what was reviewed
    await dialog.locator('[data-action="save-review"]').click()
    await expect(dialog.locator("[data-saved]")).to_contain_text("Dataset birds created")
    keys = {o.key for o in seeded.storage.list("datasets/birds/").objects}
    assert f"datasets/birds/{names[0]}" not in keys and f"datasets/birds/{names[1]}" in keys
    assert sidebar.errors == []


async def test_a_caption_edited_by_keyboard_alone(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    sidebar = await sidebar_for(browser, aiohttp_server, seeded)
    page, root = sidebar.page, sidebar.root

    # the section tabs: one tab stop, arrow keys move along
    await root.locator('[data-tab="instances"]').focus()
    await page.keyboard.press("ArrowRight")
    assert (await active(page))["tab"] == "datasets"
    await expect(root.locator('[data-tab="datasets"]')).to_have_attribute("aria-selected", "true")
    await expect(root.locator('[data-tab="instances"]')).to_have_attribute("tabindex", "-1")
    await page.keyboard.press("ArrowLeft")
    assert (await active(page))["tab"] == "instances"
    await page.keyboard.press("End")
    assert (await active(page))["tab"] == "generate"
    await page.keyboard.press("Home")

    # an action keeps the focus where it was (the section is patched, not rebuilt)
    send = root.locator('[data-action="notify-test"]')
    await send.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".toast-success")).to_contain_text("Test notification sent")
    await expect(send).to_be_enabled()
    await expect(send).to_be_focused()
    await root.locator('[data-tab="instances"]').focus()
    await page.keyboard.press("ArrowRight")

    # Tab to the dataset, Enter opens it, Tab to its first caption, Enter edits, Enter saves
    card = root.locator('[data-dataset="cats"]')
    toggle = card.locator(".lcl-link")
    for _ in range(30):
        if await toggle.evaluate("el => el === document.activeElement"):
            break
        await page.keyboard.press("Tab")
    await expect(toggle).to_be_focused()
    await page.keyboard.press("Enter")
    caption = card.locator('[data-file="002.png"] figcaption button')
    await expect(caption).to_be_visible()
    for _ in range(10):
        if await caption.evaluate("el => el === document.activeElement"):
            break
        await page.keyboard.press("Tab")
    await expect(caption).to_be_focused()
    await page.keyboard.press("Space")
    area = card.locator('textarea[aria-label="Caption of 002.png"]')
    await expect(area).to_be_focused()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("typed without a mouse")
    await page.keyboard.press("Enter")
    await expect(caption).to_have_text("typed without a mouse")
    await expect(caption).to_be_focused()
    assert seeded.storage.read_bytes("datasets/cats/002.txt") == b"typed without a mouse\n"

    # Escape leaves the editor without saving, focus back on the caption
    await page.keyboard.press("Enter")
    await expect(area).to_be_focused()
    await page.keyboard.type(" and more")
    await page.keyboard.press("Escape")
    await expect(caption).to_have_text("typed without a mouse")
    await expect(caption).to_be_focused()
    assert sidebar.errors == []


async def test_a_past_run_opens_by_keyboard(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    seeded.state.put_run(Run(id="run-0", dataset="cats", preset="character", lora_name="cat-v0",
                             state=RunState.DONE, gpu="RTX 3090", dph=0.2, created_at=NOW - 2 * 86400))
    sidebar = await sidebar_for(browser, aiohttp_server, seeded)
    page, root = sidebar.page, sidebar.root
    await root.locator('[data-tab="training"]').click()
    row = root.locator('[data-run-row="run-0"] [data-action="open-run:run-0"]')
    await row.focus()
    await page.keyboard.press("Enter")
    card = root.locator('[data-run="run-0"]')
    await expect(card).to_contain_text("cat-v0")
    await expect(card.locator('[data-action="close-run:run-0"]')).to_be_focused()
    await page.keyboard.press("Enter")  # "less": back to the row, focus with it
    await expect(row).to_be_focused()
    assert sidebar.errors == []
