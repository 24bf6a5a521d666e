"""The fake itself: wire details the reference pins down, instance processes, balance and bids."""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from comfy_lora_cloud.errors import ProviderAPIError
from comfy_lora_cloud.providers.vast import VastClient
from tests.fakes.vast.server import FakeVast
from tests.fakes.vast.state import ManualClock
from tests.vast.conftest import API_KEY


@pytest.fixture
def proc_fake(tmp_path):
    clock = ManualClock()
    fv = FakeVast(API_KEY, clock=clock, created_s=1, loading_s=10, run_processes=True, workdir=tmp_path / "inst")
    fv.start_in_thread()
    yield fv, clock
    fv.stop()


def _wait(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_wire_details(fake):
    with httpx.Client(base_url=fake.url) as h:
        r = h.get("/api/v0/gpu_names/unique/")  # no auth needed
        assert r.status_code == 200 and "RTX 4090" in r.json()["gpu_names"]
        assert r.headers["content-type"] == "application/json"
        assert h.get("/api/v0/users/current").status_code == 401
        assert h.get("/api/v0/users/current", params={"api_key": API_KEY}).status_code == 200  # legacy auth
        auth = {"Authorization": f"Bearer {API_KEY}"}
        assert h.get("/api/v0/users/current/", headers=auth).status_code == 200  # both slash forms
        bad = h.get("/api/v1/instances/", headers=auth, params={"after_token": "garbage!"})
        assert bad.status_code == 400
        assert h.get("/api/v1/instances/", headers=auth,
                     params={"select_filters": '{"dph_total": {"lt": 1}}'}).status_code == 400
        assert h.get("/api/v0/instances/", headers=auth).status_code == 410
        # numbers as strings, as the CLI sends them
        offers = h.post("/api/v0/bundles/", headers=auth, json={"num_gpus": {"gte": "4"}, "limit": "5"}).json()["offers"]
        assert len(offers) == 5 and all(o["num_gpus"] >= 4 for o in offers)
        us = h.post("/api/v0/bundles/", headers=auth, json={"geolocation": {"in": ["US"]}}).json()["offers"]
        assert us and all(o["geolocation"].endswith("US") for o in us)


async def test_instance_process_env_stop_and_self_destroy(proc_fake, tmp_path):
    fake, clock = proc_fake
    script = (
        f"{sys.executable} -c \"import os,sys,time;"
        "print('env', os.environ['RUN'], os.environ['CONTAINER_ID'], len(os.environ['CONTAINER_API_KEY']), flush=True);"
        "time.sleep(float(os.environ.get('NAP', '60')))\""
    )
    async with VastClient(fake.url, API_KEY) as c:
        offers = await c.search_offers({"rentable": {"eq": True}, "order": [["dph_total", "asc"]], "limit": 2})
        res = await c.create_instance(offers[0]["id"], image="i", label="lora-cloud:p", disk_gb=10,
                                      env={"RUN": "p1", "-p 8080:8080": "1"}, onstart=script)
        iid = res["new_contract"]
        assert fake.state.process_of(iid) is None  # nothing runs before the container is up
        clock.advance(12)
        await c.get_instance(iid)
        proc = fake.state.process_of(iid)
        assert proc is not None and proc.poll() is None
        assert _wait(lambda: "env p1" in (fake.state.get(iid).log_path.read_text()))
        assert f"env p1 {iid} 64" in await c.logs(iid)
        await c.stop(iid)
        assert proc.poll() is not None  # killed on stop
        await c.start(iid)
        clock.advance(11)
        await c.get_instance(iid)
        proc2 = fake.state.process_of(iid)
        assert proc2 is not None and proc2 is not proc
        fake.state.outbid(iid, 100)
        assert proc2.poll() is not None  # killed on preemption

    # the container's own key destroys the instance (what the trainer does when done)
    async with VastClient(fake.url, res["instance_api_key"]) as own:
        assert await own.destroy(iid) is True
    assert fake.state.get(iid) is None


async def test_process_crash_is_exited_with_message(proc_fake):
    fake, clock = proc_fake
    async with VastClient(fake.url, API_KEY) as c:
        offer = (await c.search_offers({"rentable": {"eq": True}, "limit": 1}))[0]
        iid = (await c.create_instance(offer["id"], image="i", label="lora-cloud:x", disk_gb=10,
                                       onstart="exit 7"))["new_contract"]
        clock.advance(12)
        await c.get_instance(iid)
        assert _wait(lambda: fake.state.get(iid).process is None or fake.state.get(iid).process.poll() is not None)
        row = await c.get_instance(iid)
        assert row["actual_status"] == "exited" and "code 7" in row["status_msg"]


async def test_zero_balance_stops_instances_but_storage_bills_on(fake, clock):
    fake.state.credit = 0.05
    async with VastClient(fake.url, API_KEY) as c:
        offer = (await c.search_offers({"gpu_name": {"eq": "H100 SXM"}, "rentable": {"eq": True}, "limit": 1}))[0]
        iid = (await c.create_instance(offer["id"], image="i", label="lora-cloud:b", disk_gb=100))["new_contract"]
        clock.advance(3600)
        row = await c.get_instance(iid)
        assert row["actual_status"] == "stopped" and "credit" in row["status_msg"]
        assert (await c.current_user())["credit"] <= 0
        disk = fake.state.get(iid).disk_usd
        clock.advance(3600)
        await c.get_instance(iid)
        assert fake.state.get(iid).disk_usd > disk


async def test_change_bid_and_label_counts(fake, clock):
    async with VastClient(fake.url, API_KEY) as c:
        offers = await c.search_offers({"rentable": {"eq": True}, "type": "bid", "limit": 2})
        assert all(o["is_bid"] and o["dph_total"] < o["dph_base"] + o["search"]["diskHour"] + 1e-9 for o in offers)
        iid = (await c.create_instance(offers[0]["id"], image="i", label="lora-cloud:bid", disk_gb=10,
                                       price=offers[0]["min_bid"]))["new_contract"]
        await c.change_bid(iid, 0.9)
        row = await c.get_instance(iid)
        assert row["is_bid"] is True and row["dph_base"] == 0.9
        with pytest.raises(ProviderAPIError) as ei:
            await c.create_instance(offers[1]["id"], image="i", label="lora-cloud:bad", disk_gb=10, price=500)
        assert ei.value.status == 400 and "price" in ei.value.message
