"""The CLI notifies too, and a run's "done" is told once across processes: `train status --follow`
sees a run end, posts the webhook before it exits, and a second CLI process stays silent."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from comfy_lora_cloud.models import RunState, RunStatus
from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.storage import layout


async def test_follow_notifies_once_across_cli_processes(cli, clean_env, aiohttp_server):
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    clean_env.mkdir(parents=True, exist_ok=True)
    (clean_env / "secrets.toml").write_text(f'webhook_url = "{server.make_url("/hook")}"\n')
    (clean_env / "secrets.toml").chmod(0o600)
    (clean_env / "config.toml").write_text("webhook_allow_private = true\n")  # the receiver is on 127.0.0.1
    bucket = LocalStorage(clean_env / "bucket")
    status = RunStatus(run_id="run-7", state=RunState.DONE, step=10, total_steps=10, lora="loras/dog.safetensors",
                       updated_at=time.time())
    bucket.write_bytes(layout.run_key("run-7", "status.json"), json.dumps(status.to_dict()).encode())

    for _ in range(2):
        proc = await asyncio.to_thread(cli, "train", "status", "run-7", "--follow", "--interval", "0.1")
        assert "done" in proc.stdout
    assert [(r["kind"], r["key"]) for r in received] == [("run_done", "run:run-7:done")]
