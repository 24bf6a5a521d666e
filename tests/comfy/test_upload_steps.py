"""The sidebar's upload steps over the routes, at their edges: yes/no fields that are JSON booleans
only, a bounded trigger word, one folder per name however Unicode spells it, and a discard that
cannot cut a publish short (real concurrency, ordered by gates, no sleeps), and a damaged manifest
in the bucket that a publish replaces."""

from __future__ import annotations

import asyncio
import json
import threading
import unicodedata

from comfy_lora_cloud.comfy.routes import PREFIX as A

from tests.comfy import hostile
from tests.comfy.conftest import png_bytes, token_headers

GATE_S = 30  # a gate that is never opened fails the test instead of hanging it


async def _headers(client) -> tuple[dict[str, str], dict[str, str]]:
    json_h = await token_headers(client)
    return json_h, {**json_h, "Content-Type": "application/octet-stream"}


async def _stage(client, name: str, count: int, octet: dict[str, str]) -> None:
    for i in range(count):
        resp = await client.put(f"{A}/uploads/{name}/files/{i:03d}.png", headers=octet,
                                data=png_bytes((i * 8 % 256, 90, 200 - i)))
        assert resp.status == 200, await resp.text()


def _staged(seeded, name: str) -> list[str]:
    folder = seeded.settings.home / "uploads" / name / "files"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


async def test_yes_no_fields_take_only_json_booleans(client, seeded):
    seeded.app.uploads.workers = 1
    json_h, octet = await _headers(client)
    await _stage(client, "flags", 2, octet)
    for body in ({"prepared": "false"}, {"prepared": 0}, {"prepared": None}, {"force": "no"}, {"force": 1}):
        resp = await client.post(f"{A}/uploads/flags/publish", headers=json_h, json={"mode": "create", **body})
        assert resp.status == 400, (body, await resp.text())
        assert "true or false" in (await resp.json())["message"]
    resp = await client.post(f"{A}/uploads/flags/prepare", headers=json_h,
                             json={"lora_type": "style", "resolution": 512, "overwrite_captions": "false"})
    assert resp.status == 400 and "overwrite_captions" in (await resp.json())["message"]
    assert not seeded.storage.exists("datasets/flags/dataset.json") and _staged(seeded, "flags") == ["000.png",
                                                                                                     "001.png"]

    # a review decision's keep is a boolean too: "false" does not silently keep the image
    resp = await client.post(f"{A}/uploads/flags/prepare", headers=json_h,
                             json={"lora_type": "style", "resolution": 512})
    assert resp.status == 200, await resp.text()
    first = (await resp.json())["items"][0]["image"]
    resp = await client.post(f"{A}/uploads/flags/publish", headers=json_h,
                             json={"prepared": True, "decisions": {first: {"keep": "false"}}})
    assert resp.status == 400 and "keep" in (await resp.json())["message"]
    assert not seeded.storage.exists("datasets/flags/dataset.json")

    # the same publish with real booleans goes through
    resp = await client.post(f"{A}/uploads/flags/publish", headers=json_h,
                             json={"mode": "create", "prepared": False, "force": False})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["report"]["count"] == 2


async def test_trigger_word_is_bounded_like_the_config_editor(client, seeded):
    json_h, octet = await _headers(client)
    await _stage(client, "trig", 1, octet)
    for trigger in ("x" * 60_000, "x" * 201, "sks\nother line", 7):
        resp = await client.post(f"{A}/uploads/trig/prepare", headers=json_h,
                                 json={"lora_type": "style", "resolution": 512, "trigger": trigger})
        assert resp.status == 400, (await resp.text())[:300]
        assert "trigger" in (await resp.json())["message"]
    assert not (seeded.settings.home / "uploads" / "trig" / "prepared").exists()  # nothing was prepared
    assert _staged(seeded, "trig") == ["000.png"]


async def test_two_unicode_spellings_of_a_name_stage_into_one_folder(client, seeded):
    json_h, octet = await _headers(client)
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert nfc != nfd and unicodedata.normalize("NFC", nfd) == nfc
    for name, file in ((nfc, "a.png"), (nfd, "b.png")):
        resp = await client.put(f"{A}/uploads/{name}/files/{file}", headers=octet, data=png_bytes((1, 2, 3)))
        assert resp.status == 200, await resp.text()
    assert sorted(p.name for p in (seeded.settings.home / "uploads").iterdir()) == [nfc]
    for name in (nfc, nfd):
        status = await (await client.get(f"{A}/uploads/{name}")).json()
        assert status["dataset"] == nfc and [f["file"] for f in status["files"]] == ["a.png", "b.png"]
    resp = await client.post(f"{A}/uploads/{nfd}/publish", headers=json_h, json={"mode": "create"})
    assert resp.status == 200, await resp.text()
    manifest = json.loads(seeded.storage.read_bytes(f"datasets/{nfc}/dataset.json"))
    assert sorted(f["file"] for f in manifest["files"]) == ["a.png", "b.png"]
    assert not (seeded.settings.home / "uploads" / nfc).exists()


async def test_a_discard_racing_a_publish_never_publishes_part_of_the_set(client, seeded, monkeypatch):
    json_h, octet = await _headers(client)
    await _stage(client, "herd", 30, octet)
    # the publish stops in the middle of its first bucket write until the discard has been tried
    writing, gate = threading.Event(), threading.Event()
    upload_file = seeded.storage.upload_file

    def gated_upload(*args, **kwargs):
        writing.set()
        assert gate.wait(GATE_S), "the test never opened the gate"
        return upload_file(*args, **kwargs)

    monkeypatch.setattr(seeded.storage, "upload_file", gated_upload)
    publish = asyncio.create_task(client.post(f"{A}/uploads/herd/publish", headers=json_h, json={"mode": "create"}))
    assert await asyncio.to_thread(writing.wait, GATE_S)

    discard = await client.delete(f"{A}/uploads/herd", headers=json_h)
    assert discard.status == 409, await discard.text()
    assert (await discard.json())["error"] == "LockHeld" and "publishing" in (await discard.json())["message"]
    late = await client.put(f"{A}/uploads/herd/files/late.png", headers=octet, data=png_bytes((5, 5, 5)))
    assert late.status == 409  # nor may a file slip in between the publish's listing and its manifest
    dropped = await client.delete(f"{A}/uploads/herd/files/000.png", headers=json_h)
    assert dropped.status == 409
    assert len(_staged(seeded, "herd")) == 30

    gate.set()
    resp = await publish
    assert resp.status == 200, await resp.text()
    manifest = json.loads(seeded.storage.read_bytes("datasets/herd/dataset.json"))
    assert len(manifest["files"]) == 30 and (await resp.json())["report"]["count"] == 30
    assert len([o for o in seeded.storage.list("datasets/herd/").objects if o.key.endswith(".png")]) == 30
    assert _staged(seeded, "herd") == []  # published, then the staging removed under the same hold
    # the discard, tried again now, has nothing left to cut short
    assert (await client.delete(f"{A}/uploads/herd", headers=json_h)).status == 200


async def test_a_publish_racing_a_discard_fails_clearly(client, seeded, monkeypatch):
    json_h, octet = await _headers(client)
    await _stage(client, "flock", 30, octet)
    uploads = seeded.app.uploads
    removing, gate = threading.Event(), threading.Event()
    remove_staging = uploads._remove_staging

    def gated_remove(name: str) -> None:  # the discard has removed some files when the publish comes
        for path in sorted((seeded.settings.home / "uploads" / name / "files").iterdir())[:29]:
            path.unlink()
        removing.set()
        assert gate.wait(GATE_S), "the test never opened the gate"
        remove_staging(name)

    monkeypatch.setattr(uploads, "_remove_staging", gated_remove)
    discard = asyncio.create_task(client.delete(f"{A}/uploads/flock", headers=json_h))
    assert await asyncio.to_thread(removing.wait, GATE_S)
    assert _staged(seeded, "flock") == ["029.png"]  # one of thirty left: what the race used to publish

    resp = await client.post(f"{A}/uploads/flock/publish", headers=json_h, json={"mode": "create"})
    assert resp.status == 409 and (await resp.json())["error"] == "LockHeld", await resp.text()
    gate.set()
    assert (await discard).status == 200
    resp = await client.post(f"{A}/uploads/flock/publish", headers=json_h, json={"mode": "create"})
    assert resp.status == 404, await resp.text()  # nothing staged: nothing published
    assert not seeded.storage.list("datasets/flock/").objects


async def test_publishing_over_a_damaged_manifest_writes_a_whole_new_one(client, seeded):
    json_h, octet = await _headers(client)
    for damaged in (hostile.deep_json(50_000), '{"files": [' + "1," * 10 + hostile.BIG_INT + "]}",
                    "x" * (5 * 1024 * 1024)):
        hostile.put(seeded.storage.root, "datasets/worn/dataset.json", damaged)
        await _stage(client, "worn", 2, octet)
        resp = await client.post(f"{A}/uploads/worn/publish", headers=json_h, json={"mode": "merge"})
        assert resp.status == 200, (await resp.text())[:300]
        manifest = json.loads(seeded.storage.read_bytes("datasets/worn/dataset.json"))
        assert sorted(f["file"] for f in manifest["files"]) == ["000.png", "001.png"]


async def test_review_decisions_are_all_checked_first_and_can_be_sent_again(client, seeded):
    seeded.app.uploads.workers = 1
    json_h, octet = await _headers(client)
    await _stage(client, "cats", 3, octet)  # cats exists in the bucket: "create" is refused after the review
    resp = await client.post(f"{A}/uploads/cats/prepare", headers=json_h,
                             json={"lora_type": "style", "resolution": 512})
    assert resp.status == 200, await resp.text()
    first, second, third = (i["image"] for i in (await resp.json())["items"])
    prepared = seeded.settings.home / "uploads" / "cats" / "prepared"
    before = sorted(p.name for p in prepared.iterdir())

    # a bad decision after a good one: refused, and the good one was not applied either
    bad = {first: {"keep": False}, second: {"caption": "kept"}, third: {"keep": "no"}}
    resp = await client.post(f"{A}/uploads/cats/publish", headers=json_h, json={"prepared": True, "decisions": bad})
    assert resp.status == 400 and sorted(p.name for p in prepared.iterdir()) == before
    # every image dropped: refused, nothing deleted
    none_kept = {image: {"keep": False} for image in (first, second, third)}
    resp = await client.post(f"{A}/uploads/cats/publish", headers=json_h,
                             json={"prepared": True, "decisions": none_kept})
    assert resp.status == 422 and sorted(p.name for p in prepared.iterdir()) == before

    # refused by the bucket after the decisions were applied, then sent again with replace
    decisions = {first: {"keep": False}, second: {"caption": "sks, edited"}}
    resp = await client.post(f"{A}/uploads/cats/publish", headers=json_h,
                             json={"prepared": True, "decisions": decisions})
    assert resp.status == 409, await resp.text()
    resp = await client.post(f"{A}/uploads/cats/publish", headers=json_h,
                             json={"mode": "replace", "prepared": True, "decisions": decisions})
    assert resp.status == 200, await resp.text()
    manifest = json.loads(seeded.storage.read_bytes("datasets/cats/dataset.json"))
    assert [f["image"] for f in manifest["files"]] == [second, third]
    assert manifest["files"][0]["caption"] == "sks, edited"
