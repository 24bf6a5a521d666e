"""GET /notify over a ledger with malformed rows: a 200 that lists them as damaged, never a 500."""

from __future__ import annotations

import asyncio
import json

from comfy_lora_cloud.comfy.routes import PREFIX
from comfy_lora_cloud.service.notify import NOTIFY_EVENT

from tests.comfy.conftest import token_headers

MALFORMED = {
    "notify:toast:run:x:done": "{not json",
    "notify:webhook:run:y:done": "[1, 2]",
    "notify:toast:run:z:done": json.dumps({"state": "sent", "at": "yesterday", "detail": {"deep": 1}}),
    "notify:desktop:run:w:done": '{"state": "sent", "at": 1e999}',
    "notify:toast:run:d:done": "[" * 5000 + "]" * 5000,
    "notify:toast": "{}",
}


async def test_notify_lists_malformed_ledger_rows_as_damaged(client, seeded):
    for key, value in MALFORMED.items():
        seeded.state.set_kv(key, value)
    resp = await client.get(f"{PREFIX}/notify")
    assert resp.status == 200, await resp.text()
    summary = await resp.json()
    assert len(summary["damaged"]) == len(MALFORMED)
    assert {r["state"] for r in summary["recent"]} == {"damaged"}
    assert all(r["detail"].startswith("unreadable ledger row") for r in summary["damaged"])

    # the notifier still works beside them, and a good row comes first
    resp = await client.post(f"{PREFIX}/notify/test", headers=await token_headers(client), json={})
    assert resp.status == 200
    assert await asyncio.to_thread(seeded.app.notify.flush, 30)
    assert [d["kind"] for e, d in seeded.events if e == NOTIFY_EVENT] == ["test"]
    summary = await (await client.get(f"{PREFIX}/notify")).json()
    assert (summary["recent"][0]["channel"], summary["recent"][0]["state"]) == ("toast", "sent")
