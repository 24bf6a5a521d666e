"""Shared pieces for the trainer tests: a seeded bucket, a tiny vast.ai server that records the
self-destroy call, and a way to run the real entrypoint as a subprocess with fake kohya."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from comfy_lora_cloud.storage.base import Storage
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.kohya_config import MODEL_FILES
from comfy_lora_cloud.training.spec import RunSpec
from tests.fakes.fake_kohya import PNG_1PX

REPO = Path(__file__).resolve().parents[2]
FAKE_KOHYA = REPO / "tests" / "fakes" / "fake_kohya.py"
CONTAINER_KEY = "ck-0123456789abcdef"
HF_TOKEN = "hf_TESTTOKEN0123456789"


def seed_bucket(storage: Storage, dataset: str = "cat", images: int = 3, captions: bool = True,
                models: bool = True) -> None:
    for i in range(images):
        storage.write_bytes(f"datasets/{dataset}/{i:02d}.png", PNG_1PX)
        if captions:
            storage.write_bytes(f"datasets/{dataset}/{i:02d}.txt", f"ohwx cat, photo {i}".encode())
    storage.write_bytes(f"datasets/{dataset}/dataset.json", b"{}")
    if models:
        for filename, _repo in MODEL_FILES.values():
            storage.write_bytes(f"models/{filename}", b"weights:" + filename.encode())


def small_spec(run_id: str = "run1", **kw: Any) -> RunSpec:
    """A character run of 4 epochs x 6 steps (3 images x 2 repeats), reporting fast."""
    base = dict(run_id=run_id, dataset="cat", lora_type="character", lora_name="cat", trigger="ohwx cat",
                overrides={"subset.num_repeats": 2, "max_train_epochs": 4}, status_interval=0.05, log_interval=0.2)
    base.update(kw)
    return RunSpec(**base)


@dataclass
class FakeVast:
    """Records DELETE /api/v0/instances/<id>/ as the trainer's self-destroy sends it."""

    deletes: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()

        async def delete(request: web.Request) -> web.Response:
            self.deletes.append({"id": request.match_info["id"], "auth": request.headers.get("Authorization", "")})
            return web.json_response({"success": True})

        app.router.add_delete("/api/v0/instances/{id}/", delete)
        return app


@pytest.fixture
def bucket(tmp_path: Path) -> LocalStorage:
    storage = LocalStorage(tmp_path / "bucket")
    seed_bucket(storage)
    return storage


@pytest.fixture
async def vast(aiohttp_server) -> tuple[FakeVast, str]:
    fake = FakeVast()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


@dataclass
class TrainerProcess:
    """The entrypoint as a subprocess (as the image runs it)."""

    storage_url: str
    workdir: Path
    vast_url: str
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None

    def environment(self, run_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LORA_CLOUD_", "FAKE_KOHYA_"))}
        env.update(
            LORA_CLOUD_STORAGE=self.storage_url, LORA_CLOUD_RUN_ID=run_id,
            LORA_CLOUD_KOHYA_LAUNCHER=f"{sys.executable} {FAKE_KOHYA}",
            LORA_CLOUD_HOME=str(self.workdir.parent / "trainer-home"),
            LORA_CLOUD_VAST_URL=self.vast_url, CONTAINER_ID="4242", CONTAINER_API_KEY=CONTAINER_KEY,
            HF_TOKEN=HF_TOKEN, PYTHONPATH=str(REPO),
        )
        env.update(self.env)
        return env

    async def start(self, run_id: str) -> asyncio.subprocess.Process:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "comfy_lora_cloud.worker.entrypoint", "--workdir", str(self.workdir),
            env=self.environment(run_id), cwd=str(REPO), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        return self.proc

    async def run(self, run_id: str, timeout: float = 60) -> tuple[int, str]:
        proc = await self.start(run_id)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode, out.decode(errors="replace")


def read_json(storage: Storage, key: str) -> Any:
    return json.loads(storage.read_bytes(key))


def events_of(storage: Storage, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in storage.read_bytes(f"runs/{run_id}/events.jsonl").decode().splitlines()]


def state_sequence(events: list[dict[str, Any]]) -> list[str]:
    return [e["state"] for e in events if e["kind"] == "state"]


def argv_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
