"""A real App over LocalStorage, seeded with a dataset, a LoRA, a run and an instance."""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from comfy_lora_cloud.comfy.routes import PREFIX, register_routes
from comfy_lora_cloud.comfy.token import HEADER
from comfy_lora_cloud.models import Cost, Instance, InstanceState, Run, RunState, RunStatus
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.storage import layout

# mid-day, mid-month (local time), so "today" and "this month" differ.
NOW = datetime(2026, 11, 15, 12, 0).timestamp()
SECRETS = {
    "vast_api_key": "vastkey-0123456789abcdef",
    "hf_token": "hf_SecretTokenValue0123456789",
    "gcs_service_account_json": '{"private_key": "sa-private-key-material-42"}',
}
HTML_CAPTION = '<img src=x onerror="window.__pwned=1"><b>bold</b> a photo of sks cat'


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (320, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def safetensors_bytes(metadata: dict[str, str]) -> bytes:
    header = {"__metadata__": metadata,
              "lora_unet_a.lora_down.weight": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\x00" * 8


@dataclass
class Seeded:
    app: App
    storage: LocalStorage
    state: StateStore
    settings: Settings
    events: list[tuple[str, dict[str, Any]]]
    loras_dir: Path


def seed(tmp_path: Path, home: Path, clock=lambda: NOW) -> Seeded:
    # secrets come from the 0600 secrets file, as in a real install
    home.mkdir(parents=True, exist_ok=True)
    (home / "secrets.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in SECRETS.items()))
    (home / "secrets.toml").chmod(0o600)
    settings = Settings.load(home)
    assert settings.secret("vast_api_key") == SECRETS["vast_api_key"]
    storage = LocalStorage(tmp_path / "bucket")
    state = StateStore(settings.state_db)
    events: list[tuple[str, dict[str, Any]]] = []
    loras_dir = tmp_path / "models" / "loras" / "lora_cloud"
    app = App(settings, storage=storage, state=state, emit=lambda e, d: events.append((e, d)),
              clock=clock, loras_dir=loras_dir)

    ds = layout.dataset_prefix("cats")
    storage.write_bytes(ds + "001.png", png_bytes((200, 30, 30)))
    storage.write_bytes(ds + "001.txt", HTML_CAPTION.encode())
    storage.write_bytes(ds + "002.png", png_bytes((30, 200, 30)))
    storage.write_bytes(ds + layout.MANIFEST, json.dumps({"trigger": "sks"}).encode())

    storage.write_bytes(layout.lora_key("cat-v1"), safetensors_bytes(
        {"ss_network_dim": "16", "ss_output_name": "cat-v1", "ss_base_model_version": "flux1"}))
    storage.write_bytes(layout.lora_meta_key("cat-v1"), json.dumps({"run": "run-1", "dataset": "cats"}).encode())

    state.put_run(Run(id="run-1", dataset="cats", preset="character", lora_name="cat-v1",
                      state=RunState.TRAINING, instance_id="77", gpu="RTX 4090", dph=0.4, created_at=NOW - 3600))
    status = RunStatus(run_id="run-1", state=RunState.TRAINING, step=250, total_steps=1000, loss=0.123,
                       eta_seconds=900, updated_at=NOW - 5)
    storage.write_bytes(layout.run_key("run-1", "status.json"), json.dumps(status.to_dict()).encode())
    events_jsonl = "".join(json.dumps(e) + "\n" for e in (
        {"t": NOW - 3000, "kind": "state", "state": "starting"},
        {"t": NOW - 2000, "kind": "state", "state": "training"},
        {"t": NOW - 100, "kind": "sample", "key": "runs/run-1/samples/s_0250.png"},
    ))
    storage.write_bytes(layout.run_key("run-1", "events.jsonl"), events_jsonl.encode())
    storage.write_bytes(layout.run_key("run-1", "samples/s_0250.png"), png_bytes((10, 10, 200), (64, 64)))

    state.put_instance(Instance(id="77", label="lora-cloud:run-1", state=InstanceState.RUNNING,
                                gpu_name="RTX 4090", dph_total=0.4, created_at=NOW - 3600), run_id="run-1",
                       seen_at=NOW - 3600)
    # billed for the first half hour of the instance; the rest is accrued from its $/hr
    state.add_cost(Cost("77", "run-1", "gpu", 0.2, NOW - 3600, NOW - 1800))
    # an earlier run, two days ago
    state.add_cost(Cost("50", "run-0", "gpu", 1.0, NOW - 2 * 86400 - 3600, NOW - 2 * 86400))
    return Seeded(app, storage, state, settings, events, loras_dir)


@pytest.fixture
def seeded(tmp_path, clean_env) -> Seeded:
    return seed(tmp_path, clean_env)


@pytest.fixture
async def client(aiohttp_client, seeded):
    routes = web.RouteTableDef()
    register_routes(routes, lambda: seeded.app)
    app = web.Application()
    app.add_routes(routes)
    return await aiohttp_client(app)


async def token_headers(client) -> dict[str, str]:
    """What the sidebar sends on a mutating request: the token from the same-origin GET, and JSON."""
    resp = await client.get(f"{PREFIX}/token")
    assert resp.status == 200
    body = await resp.json()
    assert body["header"] == HEADER
    return {HEADER: body["token"], "Content-Type": "application/json"}


def write_status(storage, **fields) -> None:
    """What the trainer would write for run-1 next (status.json)."""
    status = RunStatus(run_id="run-1", **{"state": RunState.TRAINING, "total_steps": 1000, **fields})
    storage.write_bytes(layout.run_key("run-1", "status.json"), json.dumps(status.to_dict()).encode())


def comfy_style_app(get_app, listen=("127.0.0.1",)) -> web.Application:
    """The routes as ComfyUI serves them: ``PromptServer.add_routes`` registers every route at
    ``/path`` and again at ``/api/path``."""
    routes = web.RouteTableDef()
    register_routes(routes, get_app, listen=listen)
    api_routes = web.RouteTableDef()  # what PromptServer.add_routes does, GET routes answering HEAD too
    for route in routes:
        if isinstance(route, web.RouteDef):
            api_routes.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
    app = web.Application()
    app.add_routes(api_routes)
    app.add_routes(routes)
    return app


@pytest.fixture
async def comfy_client(aiohttp_client, seeded):
    """A client for the seeded app's routes mounted the way ComfyUI mounts them."""
    return await aiohttp_client(comfy_style_app(lambda: seeded.app))
