"""The Generate section's routes over the seeded app (no session needed): the outputs gallery
treats the bucket as untrusted (only images by their bytes are listed; anything else is served
as an attachment), templates are listed and served for the canvas, and a session cannot start
against a bucket a rented GPU cannot reach (a clear 400, nothing rented)."""

from __future__ import annotations

from comfy_lora_cloud.comfy.routes import PREFIX

from tests.comfy.conftest import png_bytes, token_headers


async def test_outputs_gallery_is_images_only(client, seeded):
    seeded.storage.write_bytes("outputs/session-1/good_00001_.png", png_bytes((10, 200, 30)))
    seeded.storage.write_bytes("outputs/session-1/good_00001_.png.json", b'{"prompt": {}}')
    seeded.storage.write_bytes("outputs/session-1/evil.png", b"<script>alert(1)</script>")
    seeded.storage.write_bytes("outputs/..bad/x.png", png_bytes((1, 2, 3)))
    body = await (await client.get(f"{PREFIX}/outputs")).json()
    assert [(o["session"], o["file"]) for o in body["outputs"]] == [("session-1", "good_00001_.png")]
    assert {p["entry"] for p in body["problems"]} == {"outputs/session-1/evil.png", "outputs/..bad/x.png"}

    good = await client.get(f"{PREFIX}/outputs/session-1/good_00001_.png")
    assert good.status == 200 and good.content_type == "image/png"
    evil = await client.get(f"{PREFIX}/outputs/session-1/evil.png")
    assert evil.content_type != "text/html" and "attachment" in evil.headers.get("Content-Disposition", "")


async def test_templates_and_a_refused_start(client, seeded):
    listed = await (await client.get(f"{PREFIX}/templates")).json()
    assert "basic_txt2img" in [t["name"] for t in listed["templates"]]
    wf = await (await client.get(f"{PREFIX}/templates/basic_txt2img")).json()  # the canvas form
    assert wf["nodes"] and wf["links"]
    missing = await client.get(f"{PREFIX}/templates/nope")
    assert missing.status == 400 and "no template" in (await missing.json())["message"]

    assert (await (await client.get(f"{PREFIX}/sessions")).json()) == {"current": None, "sessions": []}
    resp = await client.post(f"{PREFIX}/sessions", json={"idle_minutes": 5}, headers=await token_headers(client))
    assert resp.status == 400 and "cannot reach a local folder" in (await resp.json())["message"]
    assert (await (await client.get(f"{PREFIX}/sessions")).json())["sessions"] == []
    bad = await client.post(f"{PREFIX}/sessions", json={"idle_minutes": "lots"}, headers=await token_headers(client))
    assert bad.status == 400 and "idle_minutes must be a number" in (await bad.json())["message"]
    typo = await client.post(f"{PREFIX}/sessions", json={"gpus": "4090"}, headers=await token_headers(client))
    assert typo.status == 400 and "unknown field(s) gpus" in (await typo.json())["message"]  # never the default GPU
    listed = await client.post(f"{PREFIX}/sessions", json=[1], headers=await token_headers(client))
    assert listed.status == 400 and "must be a JSON object" in (await listed.json())["message"]
    assert (await (await client.get(f"{PREFIX}/sessions")).json())["sessions"] == []  # nothing was recorded


async def test_a_damaged_session_record_is_listed_as_damaged_not_a_500(client, seeded):
    """A record with max_hours as text and created_at null used to make GET /sessions a 500."""
    from comfy_lora_cloud.models import Session, SessionState
    from tests.sessions.rows import plant, plant_unread

    record = {**Session(id="session-bad", state=SessionState.READY).to_dict(), "max_hours": "four", "created_at": None}
    plant(seeded.app.state, record)
    plant_unread(seeded.app.state, "session-deep", "[" * 50_000 + "]" * 50_000)
    resp = await client.get(f"{PREFIX}/sessions")
    assert resp.status == 200
    body = await resp.json()
    views = {v["id"]: v for v in body["sessions"]}
    assert set(views) == {"session-bad", "session-deep"} and body["current"] is None
    assert "max_hours is 'four'" in views["session-bad"]["damaged"] and views["session-bad"]["state"] == "ready"
    assert "nested deeper" in views["session-deep"]["damaged"] and views["session-deep"]["state"] == "damaged"
    # the service hands records; what the sidebar reads is their JSON, key for key
    assert list(views["session-bad"]) == ["id", "state", "provider", "instance_id", "gpu", "dph", "idle_minutes",
                                          "max_hours", "precision", "remote_port", "ssh_host", "ssh_port",
                                          "created_at", "updated_at", "ready_at", "error", "live", "deadline",
                                          "cost_usd", "uptime_seconds", "remote", "url", "tunnel", "damaged"]
    assert views["session-bad"]["error"] == views["session-bad"]["damaged"]
