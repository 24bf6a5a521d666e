"""The sidebar's publish (``POST /uploads/{name}/publish``) onto a dataset a live run trains on:
409 naming the runs (so the sidebar can offer "replace anyway"), nothing changed; with
``"force": true`` it goes through (service/library/uploads.py:Uploads.publish ->
service/library/datasets.py:upload_dataset -> service/library/dataset_use.py:require_unused)."""

from __future__ import annotations

from comfy_lora_cloud.comfy.routes import PREFIX as A
from comfy_lora_cloud.models import RunState
from tests.comfy.conftest import png_bytes, token_headers
from tests.comfy.test_dashboard_routes import octet_headers
from tests.service.test_dataset_in_use import objects, run_on


async def _stage(client, name: str, file: str, color) -> None:
    resp = await client.put(f"{A}/uploads/{name}/files/{file}", headers=await octet_headers(client),
                            data=png_bytes(color))
    assert resp.status == 200 and (await resp.json())["ok"] is True, await resp.text()


async def test_publish_onto_a_dataset_in_use_is_409_with_the_runs_then_200_with_force(client, seeded):
    json_h = await token_headers(client)
    await _stage(client, "dogs", "a.png", (200, 10, 10))
    resp = await client.post(f"{A}/uploads/dogs/publish", headers=json_h, json={"mode": "create"})
    assert resp.status == 200, await resp.text()
    run_on(seeded.storage, "r7", "dogs", RunState.TRAINING)
    run_on(seeded.storage, "r8", "dogs")  # launching: no status yet

    await _stage(client, "dogs", "b.png", (10, 200, 10))
    before = objects(seeded.storage)
    resp = await client.post(f"{A}/uploads/dogs/publish", headers=json_h, json={"mode": "replace"})
    assert resp.status == 409
    body = await resp.json()
    assert body["error"] == "DatasetInUse" and body["runs"] == ["r7", "r8"] and "r7 (training)" in body["message"]
    assert objects(seeded.storage) == before  # nothing changed, the staged file still there to resend
    bad = await client.post(f"{A}/uploads/dogs/publish", headers=json_h, json={"mode": "replace", "force": "yes"})
    assert bad.status == 400 and "force" in (await bad.json())["message"]

    resp = await client.post(f"{A}/uploads/dogs/publish", headers=json_h, json={"mode": "replace", "force": True})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["result"] == "replaced"
    assert sorted(o.key for o in seeded.storage.list("datasets/dogs/").objects if o.key.endswith(".png")) == [
        "datasets/dogs/b.png"]
