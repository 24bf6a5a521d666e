"""The sidebar's routes on a plain aiohttp app over a real service on LocalStorage."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys

import pytest
from aiohttp import web
from PIL import Image

from comfy_lora_cloud.comfy.routes import PREFIX, register_routes
from comfy_lora_cloud.comfy.token import HEADER, TOKEN_FILE
from comfy_lora_cloud.models import RunState, RunStatus
from comfy_lora_cloud.storage import layout

from tests.comfy.conftest import HTML_CAPTION, NOW, SECRETS, token_headers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

A = PREFIX


# ---- the token -----------------------------------------------------------------------------------
async def test_token_is_stable_private_and_same_origin_only(client, seeded):
    first = await client.get(f"{A}/token")
    assert first.status == 200 and first.headers["Cache-Control"] == "no-store"
    token = (await first.json())["token"]
    assert len(token) >= 32
    path = seeded.settings.home / TOKEN_FILE
    assert path.read_text() == token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    host = f"{client.server.host}:{client.server.port}"
    same = await client.get(f"{A}/token", headers={"Origin": f"http://{host}"})
    assert same.status == 200 and (await same.json())["token"] == token
    for origin in ("http://evil.example", "null", f"http://{client.server.host}:1"):
        resp = await client.get(f"{A}/token", headers={"Origin": origin})
        assert resp.status == 403, origin
        assert token not in await resp.text()
    resp = await client.get(f"{A}/token", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403


# ---- instances, costs, budgets ---------------------------------------------------------------------
async def test_instances_show_uptime_and_cost_so_far(client):
    body = await (await client.get(f"{A}/instances")).json()
    [inst] = body["instances"]
    assert inst["id"] == "77" and inst["gpu_name"] == "RTX 4090" and inst["state"] == "running"
    assert inst["uptime_seconds"] == pytest.approx(3600)
    # 0.20 billed for the first half hour + 0.20 accrued at $0.40/hr since
    assert inst["cost_usd"] == pytest.approx(0.4)
    assert inst["run_id"] == "run-1"


async def test_costs_today_month_and_per_run(client):
    body = await (await client.get(f"{A}/costs")).json()
    assert body["today_usd"] == pytest.approx(0.2)
    assert body["month_usd"] == pytest.approx(1.2)
    assert body["per_run_usd"] == {"run-1": pytest.approx(0.2), "run-0": pytest.approx(1.0)}
    assert body["budgets"]["max_month_usd"] == 50.0
    assert body["month_fraction"] == pytest.approx(1.2 / 50)


async def test_set_budgets_persists_and_notifies(client, seeded):
    assert (await (await client.get(f"{A}/budgets")).json())["max_dph"] == 2.0
    headers = await token_headers(client)
    resp = await client.post(f"{A}/budgets", json={"max_dph": 1.25, "max_month_usd": 80}, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["max_dph"] == 1.25
    assert (await (await client.get(f"{A}/budgets")).json())["max_month_usd"] == 80.0
    config = tomllib.loads((seeded.settings.home / "config.toml").read_text())
    assert config["max_dph"] == 1.25 and config["max_month_usd"] == 80.0
    assert seeded.events[-1][0] == "lora_cloud.budget" and seeded.events[-1][1]["budgets"]["max_dph"] == 1.25


@pytest.mark.parametrize("body, status", [
    ({"max_dph": -1}, 400),
    ({"max_dph": "cheap"}, 400),
    ({"max_gpus": 3}, 400),
    ({}, 400),
    ([1, 2], 400),
])
async def test_set_budgets_rejects_bad_values(client, seeded, body, status):
    resp = await client.post(f"{A}/budgets", json=body, headers=await token_headers(client))
    assert resp.status == status
    err = await resp.json()
    assert err["error"] == "ConfigError" and err["status"] == status and err["message"]
    assert not (seeded.settings.home / "config.toml").exists()


# ---- the guard on routes that spend, write or delete ------------------------------------------------
MUTATING = [
    ("POST", f"{A}/budgets", {"max_dph": 1.0}),
    ("DELETE", f"{A}/datasets/cats", {}),
    ("POST", f"{A}/loras/cat-v1/download", {}),
    ("DELETE", f"{A}/loras/cat-v1", {}),
]


@pytest.mark.parametrize("method, path, body", MUTATING)
async def test_mutating_routes_refuse_without_json_token_or_same_origin(client, seeded, method, path, body):
    good = await token_headers(client)
    attempts = [
        ({"Content-Type": "application/json"}, 403, "BadToken"),  # no token
        ({**good, HEADER: "x" * 43}, 403, "BadToken"),  # wrong token
        ({HEADER: good[HEADER], "Content-Type": "text/plain"}, 415, "UnsupportedMediaType"),
        ({**good, "Origin": "http://evil.example"}, 403, "CrossOrigin"),
        ({**good, "Origin": "null"}, 403, "CrossOrigin"),
    ]
    for headers, status, error in attempts:
        resp = await client.request(method, path, data=json.dumps(body), headers=headers)
        assert resp.status == status, (headers, await resp.text())
        assert (await resp.json())["error"] == error
    # nothing happened
    assert seeded.storage.exists("datasets/cats/001.png")
    assert seeded.storage.exists(layout.lora_key("cat-v1"))
    assert not seeded.loras_dir.exists()
    assert not (seeded.settings.home / "config.toml").exists()
    # the same request, done right, goes through
    host = f"{client.server.host}:{client.server.port}"
    resp = await client.request(method, path, data=json.dumps(body), headers={**good, "Origin": f"http://{host}"})
    assert resp.status == 200, await resp.text()


# ---- runs --------------------------------------------------------------------------------------------
async def test_runs_merge_state_store_and_bucket_status(client, seeded):
    # a run that only the bucket knows about (launched from another laptop)
    other = RunStatus(run_id="run-2", state=RunState.DONE, step=10, total_steps=10, updated_at=NOW - 10)
    seeded.storage.write_bytes(layout.run_key("run-2", "status.json"), json.dumps(other.to_dict()).encode())
    runs = (await (await client.get(f"{A}/runs")).json())["runs"]
    by_id = {r["id"]: r for r in runs}
    assert set(by_id) == {"run-1", "run-2"}
    r1 = by_id["run-1"]
    assert (r1["state"], r1["step"], r1["total_steps"], r1["loss"]) == ("training", 250, 1000, 0.123)
    assert r1["dataset"] == "cats" and r1["gpu"] == "RTX 4090" and r1["live"] is True
    assert r1["cost_usd"] == pytest.approx(0.2)
    assert by_id["run-2"]["state"] == "done" and by_id["run-2"]["live"] is False
    bad = await client.get(f"{A}/runs?limit=x")
    assert bad.status == 400


async def test_run_detail_events_and_samples(client):
    detail = await (await client.get(f"{A}/runs/run-1")).json()
    assert detail["eta_seconds"] == 900 and detail["samples"] == ["s_0250.png"]
    ev = await (await client.get(f"{A}/runs/run-1/events")).json()
    assert [e["kind"] for e in ev["events"]] == ["state", "state", "sample"] and ev["next"] == 3
    ev = await (await client.get(f"{A}/runs/run-1/events?since=2")).json()
    assert [e["kind"] for e in ev["events"]] == ["sample"] and ev["next"] == 3
    assert (await client.get(f"{A}/runs/run-1/events?since=-1")).status == 400
    samples = await (await client.get(f"{A}/runs/run-1/samples")).json()
    assert samples == {"samples": ["s_0250.png"], "problems": []}
    img = await client.get(f"{A}/runs/run-1/samples/s_0250.png")
    assert img.status == 200 and img.content_type == "image/png"
    assert Image.open(io.BytesIO(await img.read())).size == (64, 64)


async def test_unknown_and_tricky_run_ids(client):
    missing = await client.get(f"{A}/runs/nope")
    assert missing.status == 404 and (await missing.json())["error"] == "ObjectNotFound"
    for path in (f"{A}/runs/..%2Fdatasets", f"{A}/runs/.hidden", f"{A}/runs/run-1/samples/..%2F..%2Fstatus.json"):
        resp = await client.get(path)
        assert resp.status in (400, 404), path
        if resp.status == 400:
            assert (await resp.json())["error"] == "ConfigError"


# ---- datasets ----------------------------------------------------------------------------------------
async def test_datasets_images_captions_and_thumbs(client):
    [ds] = (await (await client.get(f"{A}/datasets")).json())["datasets"]
    assert (ds["name"], ds["images"], ds["captioned"], ds["trigger"]) == ("cats", 2, 1, "sks")
    images = (await (await client.get(f"{A}/datasets/cats/images")).json())["images"]
    assert [(i["file"], i["caption"]) for i in images] == [("001.png", HTML_CAPTION), ("002.png", None)]
    captions = (await (await client.get(f"{A}/datasets/cats/captions")).json())["captions"]
    assert captions == {"001.png": HTML_CAPTION, "002.png": None}
    full = await client.get(f"{A}/datasets/cats/images/001.png")
    assert full.content_type == "image/png"
    assert Image.open(io.BytesIO(await full.read())).size == (320, 200)
    thumb = await client.get(f"{A}/datasets/cats/thumbs/001.png?size=64")
    assert thumb.status == 200 and thumb.content_type == "image/jpeg"
    im = Image.open(io.BytesIO(await thumb.read()))
    assert im.format == "JPEG" and max(im.size) == 64
    assert im.getpixel((10, 10))[0] > 150  # still red
    assert (await client.get(f"{A}/datasets/cats/thumbs/001.png?size=5000")).status == 400
    assert (await client.get(f"{A}/datasets/cats/thumbs/001.txt")).status == 400


@pytest.mark.parametrize("path", [
    f"{A}/datasets/..%2F..%2Fetc/images",
    f"{A}/datasets/cats/images/..%2F..%2Floras%2Fcat-v1.safetensors",
    f"{A}/datasets/cats/images/.lora-cloud-meta",
    f"{A}/datasets/%2Fetc/images",
    f"{A}/loras/..%2Fruns%2Frun-1%2Fstatus/metadata",
])
async def test_path_tricks_are_400(client, path):
    resp = await client.get(path)
    assert resp.status == 400, (path, await resp.text())
    assert (await resp.json())["error"] == "ConfigError"


async def test_missing_dataset_is_404(client):
    resp = await client.get(f"{A}/datasets/dogs/images")
    assert resp.status == 404 and (await resp.json())["status"] == 404


async def test_delete_dataset(client, seeded):
    resp = await client.delete(f"{A}/datasets/cats", json={}, headers=await token_headers(client))
    assert resp.status == 200 and (await resp.json())["deleted"] == 4
    assert (await (await client.get(f"{A}/datasets")).json())["datasets"] == []
    again = await client.delete(f"{A}/datasets/cats", json={}, headers=await token_headers(client))
    assert again.status == 404


# ---- LoRAs -------------------------------------------------------------------------------------------
async def test_loras_list_metadata_download_delete(client, seeded):
    [lora] = (await (await client.get(f"{A}/loras")).json())["loras"]
    assert lora["name"] == "cat-v1" and lora["local"] is False and lora["metadata"]["run"] == "run-1"
    meta = await (await client.get(f"{A}/loras/cat-v1/metadata")).json()
    assert meta["metadata"]["ss_network_dim"] == "16" and meta["tensors"] == 1
    assert meta["info"] == {"run": "run-1", "dataset": "cats"}

    headers = await token_headers(client)
    resp = await client.post(f"{A}/loras/cat-v1/download", json={}, headers=headers)
    assert resp.status == 200, await resp.text()
    local = seeded.loras_dir / "cat-v1.safetensors"
    assert (await resp.json())["path"] == str(local)
    assert hashlib.md5(local.read_bytes()).hexdigest() == seeded.storage.stat(layout.lora_key("cat-v1")).md5
    assert sorted(p.name for p in seeded.loras_dir.iterdir()) == ["cat-v1.safetensors"]  # no temp files
    assert (await (await client.get(f"{A}/loras")).json())["loras"][0]["local"] is True

    resp = await client.delete(f"{A}/loras/cat-v1", json={}, headers=headers)
    assert resp.status == 200 and (await resp.json())["deleted"] == 2
    assert (await client.get(f"{A}/loras/cat-v1/metadata")).status == 404
    assert local.exists()  # deleting from the bucket never touches the local copy


async def test_corrupt_lora_download_is_refused_and_leaves_nothing(client, seeded):
    seeded.storage.stat(layout.lora_key("cat-v1"))  # checksum recorded
    path = seeded.storage.root / layout.lora_key("cat-v1")
    before = path.stat()
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")  # bit rot: same size and mtime, other bytes
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    resp = await client.post(f"{A}/loras/cat-v1/download", json={}, headers=await token_headers(client))
    assert resp.status == 502, await resp.text()
    assert (await resp.json())["error"] == "ChecksumMismatch"
    assert not seeded.loras_dir.exists() or list(seeded.loras_dir.iterdir()) == []


async def test_not_a_safetensors_file_is_422(client, seeded):
    seeded.storage.write_bytes(layout.lora_key("junk"), b"\xff" * 64)
    resp = await client.get(f"{A}/loras/junk/metadata")
    assert resp.status == 422 and (await resp.json())["error"] == "DatasetError"


# ---- errors and secrets --------------------------------------------------------------------------------
async def test_unexpected_error_is_a_bare_500(aiohttp_client, seeded):
    class Broken:
        settings = seeded.settings

        async def costs(self):
            raise RuntimeError(f"boom with {SECRETS['vast_api_key']}")

    routes = web.RouteTableDef()
    register_routes(routes, lambda: Broken())
    app = web.Application()
    app.add_routes(routes)
    client = await aiohttp_client(app)
    resp = await client.get(f"{A}/costs")
    assert resp.status == 500
    assert await resp.json() == {"error": "InternalError", "message": "internal error; see the ComfyUI log",
                                 "status": 500}


async def test_no_secret_in_any_response(client, seeded):
    headers = await token_headers(client)
    gets = ["/token", "/instances", "/instances?all=1", "/costs", "/budgets", "/runs", "/runs/run-1",
            "/runs/run-1/events", "/runs/run-1/samples", "/runs/nope", "/datasets", "/datasets/cats/images",
            "/datasets/cats/captions", "/datasets/nope/images", "/loras", "/loras/cat-v1/metadata",
            "/loras/nope/metadata", "/runs/..%2Fx"]
    bodies = [await (await client.get(A + p)).read() for p in gets]
    bodies.append(await (await client.post(f"{A}/budgets", json={"max_dph": -5}, headers=headers)).read())
    bodies.append(await (await client.post(f"{A}/budgets", json={"vast_api_key": "x"}, headers=headers)).read())
    bodies.append(await (await client.post(f"{A}/loras/cat-v1/download", json={}, headers=headers)).read())
    assert all(bodies)
    secrets = list(SECRETS.values()) + ["sa-private-key-material-42"]
    for body in bodies:
        text = body.decode("utf-8", errors="replace")
        for secret in secrets:
            assert secret not in text
