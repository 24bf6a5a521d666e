"""An instance this controller recorded that vast.ai no longer has: stopping it or reading its
logs answers 404 with what happened (the provider answered "no such instance"), never a 502,
and the answer changes nothing (the guard reconciles the store)."""

from __future__ import annotations

from comfy_lora_cloud.comfy.routes import PREFIX as A

from tests.comfy.conftest import token_headers
from tests.comfy.vast_helpers import launch_for, provider_factory, vast  # noqa: F401


async def test_stop_and_logs_of_an_instance_gone_at_vast_are_404(client, seeded, vast, provider_factory):  # noqa: F811
    fake, clock = vast
    seeded.app.providers["vast"] = provider_factory
    inst = await launch_for(provider_factory, clock, "run-9")
    seeded.state.put_instance(inst, run_id="run-9")
    async with provider_factory() as provider:  # destroyed behind this controller's back
        await provider.destroy(inst.id)
    headers = await token_headers(client)

    resp = await client.post(f"{A}/instances/{inst.id}/stop", json={}, headers=headers)
    assert resp.status == 404, await resp.text()
    body = await resp.json()
    assert body["error"] == "ObjectNotFound" and "no longer exists at vast" in body["message"]
    resp = await client.get(f"{A}/instances/{inst.id}/logs?tail=20")
    assert resp.status == 404 and "no longer exists" in (await resp.json())["message"], await resp.text()
    # nothing recorded on the strength of those answers
    row = next(r for r in seeded.state.list_instances() if r["id"] == str(inst.id))
    assert row["state"] == inst.state.value

    # an instance vast.ai still has is stopped as before
    live = await launch_for(provider_factory, clock, "run-10")
    seeded.state.put_instance(live, run_id="run-10")
    resp = await client.post(f"{A}/instances/{live.id}/stop", json={}, headers=headers)
    assert resp.status == 200 and (await resp.json())["state"] == "stopped", await resp.text()
