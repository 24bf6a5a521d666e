"""Issue 13's routes over a real App: caption edits over generations (local folder and GCS),
staged uploads checked on arrival and resumable, the preparation review, the config editor's
checks and estimates, a run's resolved config."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from comfy_lora_cloud.comfy.routes import PREFIX
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.comfy.routes.runs import train_request
from comfy_lora_cloud.storage import layout

from tests.comfy.conftest import HTML_CAPTION, png_bytes, token_headers

A = PREFIX


def jpeg_bytes(color, size=(640, 480)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    return out.getvalue()


async def octet_headers(client) -> dict[str, str]:
    h = await token_headers(client)
    return {**h, "Content-Type": "application/octet-stream"}


# ---- captions ------------------------------------------------------------------------------------
async def test_caption_edit_over_its_generation_and_undo(client, seeded):
    h = await token_headers(client)
    listing = await (await client.get(f"{A}/datasets/cats/editor")).json()
    by_file = {i["file"]: i for i in listing["images"]}
    assert by_file["001.png"]["caption"] == HTML_CAPTION and by_file["002.png"]["caption"] is None
    assert by_file["002.png"]["generation"] == "0" and isinstance(by_file["001.png"]["generation"], str)

    # a new caption for an image without one; the bucket has it
    resp = await client.put(f"{A}/datasets/cats/captions/002.png", headers=h,
                            json={"caption": "sks cat on a sofa", "generation": "0"})
    assert resp.status == 200, await resp.text()
    saved = await resp.json()
    assert seeded.storage.read_bytes("datasets/cats/002.txt") == b"sks cat on a sofa\n"

    # someone else edits it meanwhile: a write over the old generation is refused, theirs shown
    seeded.storage.write_bytes("datasets/cats/002.txt", b"their newer caption\n")
    resp = await client.put(f"{A}/datasets/cats/captions/002.png", headers=h,
                            json={"caption": "mine", "generation": saved["generation"]})
    assert resp.status == 409
    conflict = await resp.json()
    assert conflict["error"] == "CaptionConflict" and conflict["current"]["caption"] == "their newer caption"
    assert seeded.storage.read_bytes("datasets/cats/002.txt") == b"their newer caption\n"
    # "0" means "it must not exist yet": refused too
    resp = await client.put(f"{A}/datasets/cats/captions/002.png", headers=h, json={"caption": "x", "generation": "0"})
    assert resp.status == 409

    # edit over the current generation, then undo (a write back over the new generation)
    current = conflict["current"]["generation"]
    edited = await (await client.put(f"{A}/datasets/cats/captions/002.png", headers=h,
                                     json={"caption": "edited", "generation": current})).json()
    undone = await client.put(f"{A}/datasets/cats/captions/002.png", headers=h,
                              json={"caption": "their newer caption", "generation": edited["generation"]})
    assert undone.status == 200
    assert seeded.storage.read_bytes("datasets/cats/002.txt") == b"their newer caption\n"


@pytest.mark.parametrize("body, status", [
    ({"caption": "x", "generation": 5}, 409),  # a wrong generation
    ({"caption": "x", "generation": "12x"}, 400),
    ({"caption": "x", "generation": True}, 400),
    ({"caption": "x"}, 400),
    ({"caption": 5, "generation": "0"}, 400),
    ({"caption": "a\x00b", "generation": "0"}, 400),
    ({"caption": "x" * 5000, "generation": "0"}, 400),
])
async def test_caption_writes_that_are_refused(client, seeded, body, status):
    h = await token_headers(client)
    resp = await client.put(f"{A}/datasets/cats/captions/001.png", headers=h, json=body)
    assert resp.status == status
    assert seeded.storage.read_bytes("datasets/cats/001.txt") == HTML_CAPTION.encode()


async def test_caption_of_a_missing_image_or_a_non_image(client, seeded):
    h = await token_headers(client)
    resp = await client.put(f"{A}/datasets/cats/captions/009.png", headers=h, json={"caption": "x", "generation": "0"})
    assert resp.status == 404
    resp = await client.put(f"{A}/datasets/cats/captions/dataset.json", headers=h,
                            json={"caption": "x", "generation": "0"})
    assert resp.status == 400
    assert not seeded.storage.exists("datasets/cats/009.txt")


def test_caption_precondition_on_gcs(gcs_env, gcs_bucket, tmp_path, clean_env):
    """The same editor over the real GCS client (the emulator with GCS's generation rules)."""
    import asyncio

    from comfy_lora_cloud.errors import PreconditionFailed
    from comfy_lora_cloud.service.library.captions import CaptionConflict
    from comfy_lora_cloud.settings import Settings
    from comfy_lora_cloud.storage.gcs import GcsStorage
    from comfy_lora_cloud.storage.gcs_errors import make_retry
    from tests.contract.gcs_transports import GcsSemantics, session_with

    client = gcs_env.client(session_with(GcsSemantics(gcs_env.url)))
    storage = GcsStorage(gcs_bucket, "lc", client=client, retry=make_retry(initial=0.01, timeout=10))
    storage.write_bytes("datasets/dogs/1.png", png_bytes((1, 2, 3)))
    storage.write_bytes("datasets/dogs/1.txt", b"first\n")
    app = App(Settings.load(clean_env), storage=storage)

    async def go():
        [img] = (await app.captions.listing("dogs")).images
        assert img.caption == "first"
        saved = await app.captions.write("dogs", "1.png", "second", img.generation)
        with pytest.raises(CaptionConflict) as info:
            await app.captions.write("dogs", "1.png", "stale", img.generation)
        assert isinstance(info.value, PreconditionFailed) and info.value.current.caption == "second"
        await app.captions.write("dogs", "1.png", "third", saved.generation)

    asyncio.run(go())
    assert storage.read_bytes("datasets/dogs/1.txt") == b"third\n"


# ---- staged uploads --------------------------------------------------------------------------------
async def test_upload_checked_on_arrival_resumable_and_published(client, seeded):
    h = await octet_headers(client)
    good = {"a.jpg": jpeg_bytes((200, 10, 10)), "b.png": png_bytes((10, 200, 10)), "a.txt": b"sks cat\n"}
    for name, data in good.items():
        resp = await client.put(f"{A}/uploads/dogs/files/{name}?sha256={hashlib.sha256(data).hexdigest()}",
                                headers=h, data=data)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["ok"] is True
    refused = {
        "cut.png": png_bytes((1, 1, 1))[:60],  # cut off mid-download
        "fake.jpg": b"%PDF-1.4 not an image at all" * 10,  # a PDF named .jpg
        "png-as.jpg": png_bytes((5, 5, 5)),  # the wrong format for its name
        "empty.png": b"",
    }
    for name, data in refused.items():
        resp = await client.put(f"{A}/uploads/dogs/files/{name}", headers=h, data=data)
        assert resp.status == 422, name
        body = await resp.json()
        assert body["ok"] is False and body["reason"], name
    # damaged in transit: the browser's SHA-256 does not match
    resp = await client.put(f"{A}/uploads/dogs/files/c.png?sha256={'0' * 64}", headers=h, data=png_bytes((9, 9, 9)))
    assert resp.status == 422 and "SHA-256" in (await resp.json())["reason"]
    # not a dataset file, a hostile name, JSON instead of bytes, no token
    assert (await client.put(f"{A}/uploads/dogs/files/x.exe", headers=h, data=b"MZ")).status == 400
    assert (await client.put(f"{A}/uploads/dogs/files/..%2Fx.png", headers=h, data=b"x")).status in (400, 404)
    json_h = await token_headers(client)
    assert (await client.put(f"{A}/uploads/dogs/files/d.png", headers=json_h, data=b"{}")).status == 415
    no_token = {"Content-Type": "application/octet-stream"}
    assert (await client.put(f"{A}/uploads/dogs/files/d.png", headers=no_token, data=png_bytes((1, 1, 1)))).status == 403

    # resume: the status says what is there, with sizes and checksums
    status = await (await client.get(f"{A}/uploads/dogs")).json()
    assert {f["file"]: f["sha256"] for f in status["files"]} == {
        n: hashlib.sha256(d).hexdigest() for n, d in good.items()}

    # publish the staged files as they are
    resp = await client.post(f"{A}/uploads/dogs/publish", headers=json_h, json={"mode": "create"})
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["result"] == "created" and result["report"]["count"] == 2
    assert seeded.storage.read_bytes("datasets/dogs/a.txt") == b"sks cat\n"
    assert seeded.storage.exists("datasets/dogs/dataset.json")  # complete: the manifest came last
    datasets = {d["name"]: d for d in (await (await client.get(f"{A}/datasets")).json())["datasets"]}
    assert datasets["dogs"]["complete"] and datasets["dogs"]["images"] == 2
    assert (await (await client.get(f"{A}/uploads/dogs")).json())["files"] == []  # staging is gone

    # publishing onto an existing dataset needs a word
    data = png_bytes((50, 50, 50))
    await client.put(f"{A}/uploads/dogs/files/c.png", headers=h, data=data)
    resp = await client.post(f"{A}/uploads/dogs/publish", headers=json_h, json={"mode": "create"})
    assert resp.status == 409 and "replace" in (await resp.json())["message"]
    resp = await client.post(f"{A}/uploads/dogs/publish", headers=json_h, json={"mode": "merge"})
    assert (await resp.json())["result"] == "merged"
    assert seeded.storage.exists("datasets/dogs/c.png") and seeded.storage.exists("datasets/dogs/a.jpg")


async def test_prepare_review_and_publish_with_decisions(client, seeded):
    seeded.app.uploads.workers = 1  # in this process: the test's CPU is shared
    h = await octet_headers(client)
    json_h = await token_headers(client)
    for i, color in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
        await client.put(f"{A}/uploads/birds/files/{i}.jpg", headers=h, data=jpeg_bytes(color, (900, 600)))
    resp = await client.post(f"{A}/uploads/birds/prepare", headers=json_h,
                             json={"lora_type": "style", "caption": "none", "trigger": "brd", "resolution": 512})
    assert resp.status == 200, await resp.text()
    review = await resp.json()
    assert [i["caption"] for i in review["items"]] == ["brd"] * 3  # no model: the trigger alone
    assert all(i["crop_box"] is not None and i["bucket"] for i in review["items"])
    assert review["report"]["count"] == 3 and review["settings"]["lora_type"] == "style"
    first, second, third = (i["image"] for i in review["items"])
    # the prepared crop is served as an image, typed by its bytes
    img = await client.get(f"{A}/uploads/birds/prepared/{first}")
    assert img.status == 200 and img.headers["Content-Type"].startswith("image/")
    assert (await client.get(f"{A}/uploads/birds/review")).status == 200

    decisions = {second: {"keep": False}, third: {"caption": "brd, a blue bird"}}
    resp = await client.post(f"{A}/uploads/birds/publish", headers=json_h,
                             json={"mode": "create", "prepared": True, "decisions": decisions})
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["report"]["count"] == 2
    names = {o.key for o in seeded.storage.list("datasets/birds/").objects}
    assert f"datasets/birds/{first}" in names and f"datasets/birds/{second}" not in names
    third_caption = layout.dataset_prefix("birds") + third.rsplit(".", 1)[0] + ".txt"
    assert seeded.storage.read_bytes(third_caption) == b"brd, a blue bird\n"
    manifest = json.loads(seeded.storage.read_bytes("datasets/birds/dataset.json"))
    assert [f["image"] for f in manifest["files"]] == [first, third]
    assert manifest["files"][1]["caption_origin"] == "edited" and manifest["settings"]["trigger"] == "brd"

    # a review decision for an image that is not there is refused, nothing published
    bad = await client.post(f"{A}/uploads/birds/publish", headers=json_h,
                            json={"prepared": True, "decisions": {"nope.jpg": {"keep": False}}})
    assert bad.status in (400, 404)


async def test_validate_a_stored_dataset(client):
    report = await (await client.get(f"{A}/datasets/cats/validate")).json()
    assert report["count"] == 2 and "missing_captions" in report and report["missing_captions"] == ["002.png"]


# ---- the config editor -----------------------------------------------------------------------------
async def test_config_check_estimates_and_field_errors(client):
    h = await token_headers(client)
    presets = await (await client.get(f"{A}/train/presets")).json()
    assert [p["name"] for p in presets["presets"]] == ["character", "style", "concept"]
    assert presets["presets"][0]["defaults"]["rank"] == 16

    async def check(**body):
        resp = await client.post(f"{A}/train/check", headers=h, json={"dataset": "cats", "lora_type": "character",
                                                                      **body})
        assert resp.status == 200, await resp.text()
        return await resp.json()

    base = await check()
    assert base["ok"] and base["images"] == 2 and base["trigger"] == "sks"
    assert base["estimate"]["usd"] > 0 and base["estimate"]["hours"] > 0
    longer = await check(config={"steps": base["values"]["steps"] * 2})
    assert longer["ok"] and longer["estimate"]["usd"] > base["estimate"]["usd"]
    assert longer["values"]["steps"] > base["values"]["steps"]
    ranked = await check(config={"rank": 32, "learning_rate": 1e-4, "resolution": 768}, trigger="ohwx")
    assert ranked["ok"] and ranked["values"]["rank"] == 32 and ranked["values"]["resolution"] == 768
    assert ranked["overrides"] == {"network_dim": 32, "network_alpha": 32.0, "learning_rate": 1e-4,
                                   "dataset.resolution": 768}
    bad = await check(config={"rank": 0, "learning_rate": "fast", "resolution": 700, "steps": 2.5}, trigger="a\nb")
    assert not bad["ok"]
    assert {e["field"] for e in bad["errors"]} == {"rank", "learning_rate", "resolution", "steps", "trigger"}
    assert "estimate" not in bad
    missing = await check(dataset="nope")
    assert [e["field"] for e in missing["errors"]] == ["dataset"]


def test_start_body_takes_the_editor_config_with_the_same_rules():
    req = train_request({"dataset": "cats", "config": {"rank": 8, "steps": 500}})
    assert req.overrides == {"network_dim": 8, "network_alpha": 8.0, "max_train_steps": 500}
    from comfy_lora_cloud.errors import ConfigError

    with pytest.raises(ConfigError, match="rank"):
        train_request({"dataset": "cats", "config": {"rank": 100000}})
    with pytest.raises(ConfigError):
        train_request({"dataset": "cats", "config": {"epochs": 3}})


async def test_run_config_is_resolved_for_comparison(client, seeded):
    spec = {"run_id": "run-1", "dataset": "cats", "lora_type": "character", "lora_name": "cat-v1", "trigger": "sks",
            "vram_gb": 24.0, "overrides": {"network_dim": 32, "network_alpha": 32.0}}
    seeded.storage.write_bytes(layout.run_key("run-1", "spec.json"), json.dumps(spec).encode())
    config = (await (await client.get(f"{A}/runs/run-1/config")).json())["config"]
    assert config["network_dim"] == 32 and config["learning_rate"] == 2e-4 and config["dataset.resolution"] == 1024
    assert config["overridden"] == ["network_alpha", "network_dim"] and config["trigger"] == "sks"
    assert (await client.get(f"{A}/runs/nope/config")).status == 404


@pytest.mark.parametrize("body, words", [
    (b"[" * 50_000 + b"]" * 50_000, "nested deeper"),
    (b'{"lora_type": "character", "vram_gb": ' + b"9" * 401 + b"}", "401 digits"),
    (b'{"lora_type": "character", "vram_gb": 1e400}', "out of range"),
    (b'{"lora_type": "character", "overrides": {"network_dim": 100000000000000000}}', "not a finite number"),
    (b"[1, 2]", "not a JSON object"),
])
async def test_run_config_of_a_hostile_spec_shows_its_problem(client, seeded, body, words):
    """spec.json is written by a rented host: 50,000 deep or a huge number is a problem, not a 5xx."""
    seeded.storage.write_bytes(layout.run_key("run-host", "spec.json"), body)
    resp = await client.get(f"{A}/runs/run-host/config")
    assert resp.status == 200, await resp.text()
    assert words in (await resp.json())["config"]["problem"]


# ---- notifications -----------------------------------------------------------------------------------
async def test_notification_settings_and_a_test_notification(client, seeded):
    import asyncio

    from comfy_lora_cloud.service.notify import NOTIFY_EVENT

    h = await token_headers(client)
    summary = await (await client.get(f"{A}/notify")).json()
    assert summary["toast"] is True and summary["webhook_configured"] is False and summary["recent"] == []
    resp = await client.post(f"{A}/notify/test", headers=h, json={})
    assert resp.status == 200
    assert await asyncio.to_thread(seeded.app.notify.flush, 30)
    [toast] = [d for e, d in seeded.events if e == NOTIFY_EVENT]
    assert toast["kind"] == "test" and toast["severity"] == "info"
    summary = await (await client.get(f"{A}/notify")).json()
    assert [(r["channel"], r["state"]) for r in summary["recent"]] == [("toast", "sent")]

    resp = await client.post(f"{A}/notify/settings", headers=h, json={"notify_toast": False, "webhook_format": "slack"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["toast"] is False
    assert seeded.app.settings.notify_toast is False and seeded.app.settings.webhook_format == "slack"
    assert "notify_toast = false" in (seeded.settings.home / "config.toml").read_text()
    for bad in ({"notify_toast": "no"}, {"webhook_url": "https://x.example"}, {"webhook_format": "teams"}, {}):
        resp = await client.post(f"{A}/notify/settings", headers=h, json=bad)
        assert resp.status == 400, bad
    # with the toast off, a test reaches no tab
    await client.post(f"{A}/notify/test", headers=h, json={})
    assert await asyncio.to_thread(seeded.app.notify.flush, 30)
    assert len([d for e, d in seeded.events if e == NOTIFY_EVENT]) == 1


async def test_a_photo_of_several_megabytes_is_staged(client, seeded):
    """Bigger than aiohttp's default 1 MiB body: the upload streams, up to the 40 MB a photo may be."""
    import os as _os

    noise = Image.frombytes("RGB", (1200, 900), _os.urandom(1200 * 900 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG")
    data = out.getvalue()
    assert len(data) > 3 * 1024 * 1024
    h = await octet_headers(client)
    resp = await client.put(f"{A}/uploads/big/files/noise.png?sha256={hashlib.sha256(data).hexdigest()}",
                            headers=h, data=data)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["width"] == 1200
    assert (seeded.settings.home / "uploads" / "big" / "files" / "noise.png").read_bytes() == data
