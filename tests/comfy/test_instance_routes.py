"""Instance stop / destroy / logs through the routes, the real VastProvider and the fake vast.ai server."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from comfy_lora_cloud.comfy.events import guard_forever
from comfy_lora_cloud.comfy.routes import PREFIX as A
from comfy_lora_cloud.models import InstanceState, Run, RunState, RunStatus
from comfy_lora_cloud.providers.base import LaunchSpec, OfferRequest, with_bucket_tag
from comfy_lora_cloud.providers.vast import VastClient, VastProvider
from comfy_lora_cloud.storage import layout
from comfy_lora_cloud.storage.identity import ensure_bucket_id

from tests.comfy.conftest import NOW, SECRETS, token_headers
from tests.comfy.vast_helpers import launch_for, no_sleep, provider_factory, vast  # noqa: F401
from tests.fakes.vast.server import FakeVast
from tests.fakes.vast.state import ManualClock

KEY = SECRETS["vast_api_key"]


async def test_stop_logs_destroy_our_instance(client, seeded, vast, provider_factory):
    fake, clock = vast
    seeded.app.providers["vast"] = provider_factory
    inst = await launch_for(provider_factory, clock, "run-9")
    assert inst.state is InstanceState.RUNNING
    seeded.state.put_instance(inst, run_id="run-9")
    headers = await token_headers(client)

    logs = await client.get(f"{A}/instances/{inst.id}/logs?tail=50")
    assert logs.status == 200, await logs.text()
    assert "container started" in (await logs.json())["logs"]

    resp = await client.post(f"{A}/instances/{inst.id}/stop", json={}, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "stopped"
    assert fake.state.get(int(inst.id)).intended == "stopped"
    listed = {i["id"]: i for i in (await (await client.get(f"{A}/instances")).json())["instances"]}
    assert listed[str(inst.id)]["state"] == "stopped"
    # the service hands records; what the sidebar reads is their JSON, key for key
    assert list(listed[str(inst.id)]) == ["id", "provider", "label", "run_id", "state", "gpu_name", "num_gpus",
                                          "dph_total", "interruptible", "status_msg", "created_at",
                                          "uptime_seconds", "cost_usd"]

    resp = await client.post(f"{A}/instances/{inst.id}/destroy", json={}, headers=headers)
    assert resp.status == 200 and await resp.json() == {"id": str(inst.id), "destroyed": True, "existed": True}
    costs = await (await client.get(f"{A}/costs")).json()
    assert list(costs) == ["today_usd", "month_usd", "per_run_usd", "per_instance_usd", "reconciled_with_charges",
                           "suspect_charges", "corrupt_lines", "budgets", "month_fraction"]
    assert costs["budgets"] == await (await client.get(f"{A}/budgets")).json()
    assert list(costs["budgets"]) == ["max_dph", "max_run_usd", "max_month_usd", "max_run_hours"]
    assert fake.state.get(int(inst.id)) is None
    assert str(inst.id) not in {i["id"] for i in (await (await client.get(f"{A}/instances")).json())["instances"]}
    kinds = [e for e, _ in seeded.events]
    assert kinds.count("lora_cloud.instance") == 2


async def test_foreign_instances_are_never_touched(client, seeded, vast, provider_factory):
    fake, clock = vast
    seeded.app.providers["vast"] = provider_factory
    async with provider_factory() as provider:  # the account's own instance, not labelled lora-cloud:
        offer = min(await provider.search(OfferRequest(gpu_names=["RTX 4090"], max_dph=0.6)), key=lambda o: o.dph_total)
        theirs = await provider.launch(offer, LaunchSpec(image="their-job:1", label="someone-elses-job"))
    headers = await token_headers(client)
    for action in ("stop", "destroy"):
        resp = await client.post(f"{A}/instances/{theirs.id}/{action}", json={}, headers=headers)
        assert resp.status == 404 and (await resp.json())["error"] == "ObjectNotFound"
    assert fake.state.get(int(theirs.id)).intended == "running"
    assert (await client.get(f"{A}/instances/{theirs.id}/logs")).status == 404
    assert (await client.get(f"{A}/instances/..%2F1/logs")).status == 400


async def test_without_a_key_instances_say_so(client, seeded):
    from comfy_lora_cloud.service.app import App
    from comfy_lora_cloud.settings import Settings

    keyless = App(Settings.load(seeded.settings.home, vast_api_key=""))
    seeded.app.providers["vast"] = keyless.provider("vast")
    resp = await client.post(f"{A}/instances/77/stop", json={}, headers=await token_headers(client))
    assert resp.status == 400 and "vast.ai API key" in (await resp.json())["message"]


async def test_provider_errors_are_json_and_keep_the_key_out(client, seeded, vast, provider_factory):
    fake, clock = vast
    seeded.app.providers["vast"] = provider_factory
    inst = await launch_for(provider_factory, clock, "run-9")
    seeded.state.put_instance(inst, run_id="run-9")
    fake.fail_next(10, status=500)
    resp = await client.post(f"{A}/instances/{inst.id}/destroy", json={}, headers=await token_headers(client))
    body = await resp.text()
    assert resp.status == 502, body
    assert KEY not in body and (await resp.json())["error"] == "ProviderAPIError"


async def test_stop_run_destroys_its_instance_and_ends_the_run(client, seeded, vast, provider_factory):
    fake, clock = vast
    seeded.app.providers["vast"] = provider_factory
    inst = await launch_for(provider_factory, clock, "run-9")
    seeded.state.put_run(Run(id="run-9", dataset="cats", preset="character", lora_name="cat-v2",
                             state=RunState.TRAINING, instance_id=str(inst.id)))
    seeded.state.put_instance(inst, run_id="run-9")
    status = RunStatus(run_id="run-9", state=RunState.TRAINING, step=10, total_steps=100)
    seeded.storage.write_bytes(layout.run_key("run-9", "status.json"), json.dumps(status.to_dict()).encode())

    refused = await client.post(f"{A}/runs/run-9/stop", json={})
    assert refused.status == 403 and fake.state.get(int(inst.id)) is not None

    resp = await client.post(f"{A}/runs/run-9/stop", json={}, headers=await token_headers(client))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"id": "run-9", "run_id": "run-9", "state": "stopped",
                                 "destroyed_instances": [str(inst.id)], "destroyed": True}
    assert fake.state.get(int(inst.id)) is None
    # the trainer's last word was "training", but it cannot speak any more: the run shows stopped
    detail = await (await client.get(f"{A}/runs/run-9")).json()
    assert detail["state"] == "stopped" and detail["live"] is False and detail["step"] == 10
    assert ("lora_cloud.run", "stopped") in [(e, d.get("state")) for e, d in seeded.events]

    again = await client.post(f"{A}/runs/run-9/stop", json={}, headers=await token_headers(client))
    assert again.status == 400 and "already ended" in (await again.json())["message"]
    missing = await client.post(f"{A}/runs/run-404/stop", json={}, headers=await token_headers(client))
    assert missing.status == 404


async def test_reconcile_and_watchdog_loop(seeded, tmp_path):
    """guard_forever: an orphan is destroyed, another laptop's live run is left alone, and a
    budget breach destroys our instance and tells the sidebar. The other laptop's run is held to
    the limits it was launched under, not to this home's: it recorded none (an older version), so
    only the hard maxima hold it here, and the difference is reported instead of destroying it."""
    clock = ManualClock(start=NOW - 3600)  # the fake's timeline matches the service's clock
    fake = FakeVast(KEY, clock=clock, created_s=1.0, loading_s=30.0, workdir=tmp_path / "instances")
    fake.start_in_thread()
    try:
        @contextlib.asynccontextmanager
        async def open_provider():
            async with VastClient(fake.url, KEY, sleep=no_sleep) as client:
                yield VastProvider(client)

        seeded.app.providers["vast"] = open_provider
        # this bucket's orphan (its id carries the bucket's); an untagged one known nowhere is only kept
        ghost = await launch_for(open_provider, clock, with_bucket_tag("ghost", ensure_bucket_id(seeded.storage)))
        theirs = await launch_for(open_provider, clock, "elsewhere")
        ours = await launch_for(open_provider, clock, "run-9")
        seeded.state.put_run(Run(id="run-9", dataset="cats", preset="character", lora_name="x",
                                 state=RunState.TRAINING, instance_id=str(ours.id)))
        seeded.state.put_instance(ours, run_id="run-9")
        live = RunStatus(run_id="elsewhere", state=RunState.TRAINING, updated_at=NOW - 60)
        seeded.storage.write_bytes(layout.run_key("elsewhere", "status.json"), json.dumps(live.to_dict()).encode())

        after_round: list[set[int]] = []

        async def sleep(_seconds):
            after_round.append({i for i in (ghost.id, theirs.id, ours.id) if fake.state.get(int(i)) is not None})
            if len(after_round) == 1:
                await seeded.app.costs.set_budgets({"max_dph": 0.05})  # every GPU here now breaks it
            else:
                raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await guard_forever(lambda: _coro(seeded.app), grace_s=0.0, sleep=sleep)
        assert after_round[0] == {theirs.id, ours.id}  # the orphan went, the others stayed
        assert after_round[1] == {theirs.id}  # the watchdog enforced this home's max_dph on its own run only
        enforced = [d for e, d in seeded.events if e == "lora_cloud.budget" and d.get("kind") == "enforced"]
        assert {d["instance_id"] for d in enforced} == {str(ours.id)}
        assert all("max_dph" in d["message"] for d in enforced)
        told = [d for e, d in seeded.events if e == "lora_cloud.guard" and d.get("problem") == "run_limits"]
        assert any("elsewhere" in d["message"] for d in told), told
    finally:
        fake.stop()


async def _coro(value):
    return value
