"""The sidebar holds the same rules as the CLI, in Chromium over the real routes and a real App:
a dataset name the CLI accepts (``café``) is accepted by the upload and lands as
``datasets/café/``, one the CLI refuses is refused in the CLI's words before anything is sent;
and with ``comfyui_loras_dir`` set, a LoRA that Await LoRA downloaded shows as in ComfyUI."""

from __future__ import annotations

import json

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.models import RunState, RunStatus, validate_name
from comfy_lora_cloud.comfy.nodes.runs import comfy_lora_name
from comfy_lora_cloud.settings import set_value
from comfy_lora_cloud.storage import layout

from tests.browser.test_dashboard import drop_files, jpeg, open_sidebar
from tests.comfy.conftest import seed


async def test_a_unicode_dataset_name_is_accepted_as_by_the_cli(browser, aiohttp_server, tmp_path, clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    assert validate_name("café", "dataset name") == "café"  # the CLI's rule (`dataset upload --name café`)
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded)
    await root.locator('[data-tab="datasets"]').click()
    await root.locator('input[aria-label="New dataset name"]').fill("café")
    await drop_files(page, "[data-drop]", {"a.jpg": jpeg((200, 30, 30)), "a.txt": b"a cup of coffee"})
    await expect(root.locator("[data-upload-progress]")).to_contain_text("2 staged for café")
    save = root.locator('[data-action="publish-upload"]')
    await save.click()
    await expect(save).to_have_text("Save now?")
    await save.click()
    await expect(root.locator('[data-dataset="café"]')).to_contain_text("1 images · 1 captioned")
    assert seeded.storage.read_bytes("datasets/café/a.txt") == b"a cup of coffee"
    assert seeded.storage.exists("datasets/café/dataset.json")
    assert errors == []


@pytest.mark.parametrize("name", ["a/b", "..x"])
async def test_a_name_the_cli_refuses_is_refused_in_its_words(browser, aiohttp_server, tmp_path, clean_env, name):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    with pytest.raises(ConfigError) as refused:
        validate_name(name, "dataset name")
    assert "must not contain '..', '/' or '\\'" in refused.value.message
    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded)
    puts: list[str] = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    await root.locator('[data-tab="datasets"]').click()
    await root.locator('input[aria-label="New dataset name"]').fill(name)
    await drop_files(page, "[data-drop]", {"a.jpg": jpeg((200, 30, 30))})
    # the server checks the name by the CLI's rule and the sidebar says its message as it is
    await expect(page.locator(".toast-error")).to_contain_text(refused.value.message)
    assert puts == []  # refused before a byte was sent
    assert errors == []


async def test_a_lora_await_lora_put_in_comfyui_loras_dir_shows_as_downloaded(browser, aiohttp_server, tmp_path,
                                                                               clean_env):
    from playwright.async_api import expect

    seeded = seed(tmp_path, clean_env)
    comfy_loras = tmp_path / "ComfyUI" / "models" / "loras"
    set_value(clean_env, "comfyui_loras_dir", str(comfy_loras))
    seeded.app.source.invalidate()
    done = RunStatus(run_id="run-2", state=RunState.DONE, lora=layout.lora_key("cat-v1"))
    seeded.storage.write_bytes(layout.run_key("run-2", "status.json"), json.dumps(done.to_dict()).encode())

    # what the Await LoRA node does: wait for the run, download to the app's LoRA folder
    path = await seeded.app.runs.fetch_lora("run-2", "cat-v1", poll_s=0.01)
    name = comfy_lora_name(path)
    # under the setting, where ComfyUI lists it by the name the node returns
    assert path == comfy_loras / name and name == "lora_cloud/cat-v1.safetensors"

    page, root, errors = await open_sidebar(browser, aiohttp_server, seeded)
    await root.locator('[data-tab="loras"]').click()
    card = root.locator('[data-lora="cat-v1"]')
    await expect(card).to_contain_text("in ComfyUI")
    await expect(card.locator('[data-action="download:cat-v1"]')).to_have_count(0)
    assert errors == []
