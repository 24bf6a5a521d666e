"""Quick launch from the sidebar: POST /lora_cloud/api/runs trains a stored dataset through the
same path as the Launch node (start_run), against the fake vast.ai server and the GCS emulator."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from comfy_lora_cloud.comfy.routes import PREFIX as A, register_routes
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import open_storage
from tests.comfy.conftest import SECRETS, token_headers
from tests.comfy.vast_helpers import provider_factory_for
from tests.fakes.vast.server import FakeVast
from tests.training.trainer_helpers import seed_bucket


async def test_quick_launch_refuses_what_cannot_work(client, seeded):
    headers = await token_headers(client)
    resp = await client.post(f"{A}/runs", data=json.dumps({"dataset": "cats"}), headers={"Content-Type": "text/plain"})
    assert resp.status == 415  # not JSON: a cross-site form cannot spend money
    resp = await client.post(f"{A}/runs", json={"dataset": "cats"})
    assert resp.status == 403  # no token
    resp = await client.post(f"{A}/runs", json={"dataset": "cats", "lora_type": "portrait"}, headers=headers)
    assert resp.status == 400 and "lora_type" in (await resp.json())["message"]
    resp = await client.post(f"{A}/runs", json={"dataset": "../etc"}, headers=headers)
    assert resp.status == 400
    # the seeded install keeps its data in a local folder, which a rented GPU cannot reach
    resp = await client.post(f"{A}/runs", json={"dataset": "cats"}, headers=headers)
    body = await resp.json()
    assert resp.status == 400 and "cannot reach a local folder" in body["message"]
    assert [r.id for r in seeded.state.list_runs()] == ["run-1"]  # nothing recorded, nothing rented


@pytest.fixture
async def gcs_client(aiohttp_client, gcs_bucket, clean_env, tmp_path):
    fake = FakeVast(SECRETS["vast_api_key"], created_s=0.1, loading_s=0.2, workdir=tmp_path / "instances")
    fake.start_in_thread()
    clean_env.mkdir(parents=True, exist_ok=True)
    (clean_env / "secrets.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in SECRETS.items()))
    (clean_env / "secrets.toml").chmod(0o600)
    settings = Settings.load(clean_env, storage=f"gs://{gcs_bucket}/lc", vast_url=fake.url, max_run_usd=50)
    storage = open_storage(settings=settings)
    seed_bucket(storage, dataset="cats", images=6, models=True)

    open_provider = provider_factory_for(fake)
    events: list = []
    lora_app = App(settings, storage=storage, providers={"vast": open_provider},
                   emit=lambda e, d: events.append((e, d)))
    routes = web.RouteTableDef()
    register_routes(routes, lambda: lora_app)
    app = web.Application()
    app.add_routes(routes)
    yield await aiohttp_client(app), fake, events
    fake.stop()


async def test_quick_launch_rents_once_and_reattaches(gcs_client):
    client, fake, events = gcs_client
    headers = await token_headers(client)
    resp = await client.post(f"{A}/runs", json={"dataset": "cats", "lora_type": "character", "gpu": "auto"},
                             headers=headers)
    first = await resp.json()
    assert resp.status == 200, first
    assert first["attached"] is False and first["gpu"] and first["expected_usd"] > 0
    inst = fake.state.get(int(first["instance_id"]))
    assert inst.label == f"lora-cloud:{first['run_id']}"
    assert SECRETS["vast_api_key"] not in json.dumps(inst.env)  # the account key never goes to the GPU
    assert any(e == "lora_cloud.run" and d["id"] == first["run_id"] for e, d in events)
    again = await (await client.post(f"{A}/runs", json={"dataset": "cats", "lora_type": "character"},
                                     headers=headers)).json()
    assert again["attached"] is True and again["run_id"] == first["run_id"]
    assert fake.state.created_count == 1
    text = json.dumps([first, again])
    assert all(secret not in text for secret in SECRETS.values())
