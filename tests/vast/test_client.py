"""VastClient and VastProvider against the fake server over real HTTP: lifecycle, billing, each fault."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import OfferUnavailable, ProviderAPIError
from comfy_lora_cloud.models import InstanceState
from comfy_lora_cloud.providers.base import LaunchSpec, OfferRequest, run_label
from comfy_lora_cloud.providers.vast import VastClient, VastProvider
from tests.vast.conftest import API_KEY


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(fake, sleeps):
    c = VastClient(fake.url, API_KEY, sleep=sleeps, backoff_base=0.5)
    yield c
    await c.aclose()


async def _cheapest_4090(client: VastClient) -> dict:
    rows = await client.search_offers({"gpu_name": {"eq": "RTX 4090"}, "num_gpus": {"eq": "1"},
                                       "order": [["dph_total", "asc"]], "limit": 3})
    assert rows and rows[0]["dph_total"] <= rows[-1]["dph_total"]
    return rows[0]


async def test_lifecycle_and_billing(fake, clock, client):
    provider = VastProvider(client)
    offers = await provider.search(OfferRequest(gpu_names=["RTX 4090"], min_reliability=0.9, max_dph=0.5))
    assert offers and all(o.gpu_name == "RTX 4090" and o.reliability >= 0.9 and o.dph_total <= 0.5 for o in offers)
    offer = min(offers, key=lambda o: o.dph_total)
    inst = await provider.launch(offer, LaunchSpec(image="img:1", label=run_label("r1"), disk_gb=50, env={"A": "1"}))
    assert inst.state is InstanceState.CREATING and inst.run_id == "r1" and inst.ssh_port is None
    credit0 = (await client.current_user())["credit"]

    clock.advance(5)  # created at +1 s, loading for 30 s
    assert (await provider.get(inst.id)).state is InstanceState.LOADING
    clock.advance(3600)
    running = await provider.get(inst.id)
    assert running.state is InstanceState.RUNNING and running.ssh_port and running.ssh_host

    fi = fake.state.get(int(inst.id))
    gpu_hours = (3605 - 31) / 3600
    disk_hours = 3605 / 3600
    assert fi.gpu_usd == pytest.approx(fi.gpu_dph * gpu_hours, rel=1e-6)  # loading is not GPU-billed
    assert fi.disk_usd == pytest.approx(fi.disk_dph * disk_hours, rel=1e-6)
    credit1 = (await client.current_user())["credit"]
    assert credit0 - credit1 == pytest.approx(fi.gpu_dph * gpu_hours + fi.disk_dph * (disk_hours - 0), rel=1e-3, abs=1e-4)
    charges = await client.charges(clock.now - 86400, clock.now)
    assert [c["source"] for c in charges] == [f"instance-{inst.id}"]
    assert charges[0]["amount"] == pytest.approx(fi.gpu_usd + fi.disk_usd, abs=1e-5)

    await client.set_label(inst.id, "other")
    assert (await client.get_instance(inst.id))["label"] == "other"
    await client.stop(inst.id)
    stopped = await provider.get(inst.id)
    assert stopped.state is InstanceState.STOPPED and stopped.intended_state == "stopped"
    gpu_before = fi.gpu_usd
    clock.advance(600)
    await provider.get(inst.id)
    assert fi.gpu_usd == gpu_before and fi.disk_usd > fi.disk_dph * disk_hours  # stopped: storage only
    await client.start(inst.id)
    clock.advance(31)
    assert (await provider.get(inst.id)).state is InstanceState.RUNNING

    logs = await provider.logs(inst.id)
    assert "container started" in logs

    assert await provider.destroy(inst.id) is True
    assert await provider.get(inst.id) is None
    assert await client.destroy(inst.id) is False  # already gone
    assert await client.list_instances() == []


async def test_listing_pages_and_label_filter(fake, client):
    rows = await client.search_offers({"num_gpus": {"eq": 1}, "limit": 30, "order": [["dph_total", "asc"]]})
    assert len(rows) == 30
    for i, r in enumerate(rows):
        await client.create_instance(r["id"], image="i", label=f"lora-cloud:p{i % 3}", disk_gb=10)
    assert len(await client.list_instances()) == 30  # two pages of at most 25
    assert len(await client.list_instances(label="lora-cloud:p1")) == 10
    assert sum(1 for m, p in fake.state.requests if p == "/api/v1/instances") >= 3


async def test_retries_honour_retry_after_and_body_kinds(fake, client, sleeps):
    fake.fail_next(1, 429, retry_after=2, body="text")
    fake.fail_next(1, 429, body="detail")
    fake.fail_next(1, 503, body="json")
    assert await client.list_instances() == []
    assert len(sleeps) == 3
    assert 2.0 <= sleeps[0] <= 2.2  # Retry-After honoured (plus a little jitter)
    assert all(s <= 0.5 * 2 ** i for i, s in enumerate(sleeps[1:], start=1))  # full-jitter backoff


async def test_gives_up_cleanly_after_max_attempts(fake, sleeps):
    c = VastClient(fake.url, API_KEY, sleep=sleeps, max_attempts=3)
    fake.fail_next(5, 502)
    with pytest.raises(ProviderAPIError) as ei:
        await c.list_instances()
    assert ei.value.status == 502 and len(sleeps) == 2
    await c.aclose()


async def test_search_quota_is_not_retried(fake, client, sleeps):
    fake.fail_next(1, 429, body="quota", path_contains="bundles")
    with pytest.raises(ProviderAPIError, match="quota"):
        await client.search_offers({})
    assert sleeps == []


async def test_lost_create_answer_never_doubles(fake, client):
    offer = await _cheapest_4090(client)
    fake.fail_next(1, 504, path_contains="/asks/", act_first=True)  # server acts, answer lost
    res = await client.create_instance(offer["id"], image="i", label="lora-cloud:lost", disk_gb=10)
    assert res["recovered"] is True
    rows = await client.list_instances()
    assert [r["id"] for r in rows] == [res["new_contract"]]
    assert fake.state.created_count == 1


async def test_create_on_a_gone_offer_is_offer_unavailable(fake, client):
    offer = await _cheapest_4090(client)
    await client.create_instance(offer["id"], image="i", label="lora-cloud:a", disk_gb=10)
    with pytest.raises(OfferUnavailable):
        await client.create_instance(offer["id"], image="i", label="lora-cloud:b", disk_gb=10)
    with pytest.raises(OfferUnavailable):
        await client.create_instance(1, image="i", label="lora-cloud:c", disk_gb=10)


async def test_bad_key_is_rejected_and_never_echoed(fake, sleeps):
    bad = "wrong-key-0123456789abcdef"
    c = VastClient(fake.url, bad, sleep=sleeps)
    with pytest.raises(ProviderAPIError) as ei:
        await c.list_instances()
    assert ei.value.status == 401 and bad not in str(ei.value) and bad not in ei.value.body
    await c.aclose()


async def test_outbid_pauses_then_resumes(fake, clock, client):
    provider = VastProvider(client)
    offer = (await provider.search(OfferRequest(gpu_names=["RTX 3090"], interruptible=True)))[0]
    assert offer.interruptible and offer.dph_total < offer.raw["dph_base"] + 1
    inst = await provider.launch(offer, LaunchSpec(image="i", label=run_label("bid"), interruptible=True))
    assert inst.interruptible
    clock.advance(40)
    assert (await provider.get(inst.id)).state is InstanceState.RUNNING
    fake.state.outbid(int(inst.id), seconds=300)
    paused = await provider.get(inst.id)
    assert paused.state is InstanceState.STOPPED and paused.intended_state == "running"  # preempted, not user-stopped
    fi = fake.state.get(int(inst.id))
    gpu = fi.gpu_usd
    clock.advance(299)
    await provider.get(inst.id)
    assert fi.gpu_usd == gpu
    clock.advance(1 + 30)
    assert (await provider.get(inst.id)).state is InstanceState.RUNNING


async def test_host_offline_stops_billing_and_comes_back(fake, clock, client):
    offer = await _cheapest_4090(client)
    iid = (await client.create_instance(offer["id"], image="i", label="lora-cloud:off", disk_gb=10))["new_contract"]
    clock.advance(40)
    fake.state.host_offline(iid, 100)
    assert (await client.get_instance(iid))["actual_status"] == "offline"
    fi = fake.state.get(iid)
    spent = fi.gpu_usd + fi.disk_usd
    clock.advance(50)
    await client.get_instance(iid)
    assert fi.gpu_usd + fi.disk_usd == spent
    clock.advance(60)
    assert (await client.get_instance(iid))["actual_status"] == "running"


async def test_exit_with_error_and_image_pull_error(fake, clock, client):
    provider = VastProvider(client)
    offers = await client.search_offers({"gpu_name": {"eq": "RTX 4090"}, "limit": 2})
    fake.state.fail_next_pull()
    bad = await provider.launch(offer_from(offers[0]), LaunchSpec(image="nope", label=run_label("pull")))
    clock.advance(40)
    got = await provider.get(bad.id)
    assert got.state is InstanceState.EXITED and "OCI runtime create failed" in got.status_msg
    ok = await provider.launch(offer_from(offers[1]), LaunchSpec(image="i", label=run_label("crash")))
    clock.advance(40)
    fake.state.exit_with_error(int(ok.id), "CUDA error: out of memory")
    got = await provider.get(ok.id)
    assert got.state is InstanceState.EXITED and "out of memory" in got.status_msg


async def test_container_key_may_destroy_only_its_own_instance(fake, client, sleeps):
    offers = await client.search_offers({"limit": 2})
    a = await client.create_instance(offers[0]["id"], image="i", label="lora-cloud:self", disk_gb=10)
    b = await client.create_instance(offers[1]["id"], image="i", label="lora-cloud:other", disk_gb=10)
    own = VastClient(fake.url, a["instance_api_key"], sleep=sleeps)
    with pytest.raises(ProviderAPIError) as ei:
        await own.destroy(b["new_contract"])
    assert ei.value.status == 403
    assert await own.destroy(a["new_contract"]) is True
    assert [r["id"] for r in await client.list_instances()] == [b["new_contract"]]
    await own.aclose()


async def test_ssh_keys_account_and_attach(fake, client):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake lora@test"
    added = await client.add_ssh_key(key)
    assert added["public_key"] == key
    assert [k["public_key"] for k in await client.ssh_keys()] == [key]
    offer = await _cheapest_4090(client)
    iid = (await client.create_instance(offer["id"], image="i", label="lora-cloud:k", disk_gb=10))["new_contract"]
    await client.attach_ssh_key(iid, key)
    assert fake.state.get(iid).ssh_keys


def offer_from(row: dict):
    from comfy_lora_cloud.providers.vast import offer_from_vast

    return offer_from_vast(row)


async def test_offer_request_filters_map_to_the_vast_query(fake, client):
    provider = VastProvider(client)
    req = OfferRequest(gpu_names=["RTX 4090", "A100 SXM4"], min_vram_gb=23, min_ram_gb=60, min_disk_gb=150,
                       min_reliability=0.95, verified=True, max_dph=1.5, min_inet_down_mbps=300, min_cuda=12.4,
                       regions=["US", "DE", "CA", "NL", "SE", "PL"], allocated_storage_gb=100)
    offers = await provider.search(req)
    assert offers
    for o in offers:
        assert o.gpu_name in ("RTX 4090", "A100 SXM4") and o.gpu_ram_gb >= 23 and o.cpu_ram_gb >= 60
        assert o.disk_gb >= 150 and o.reliability >= 0.95 and o.verified and o.dph_total <= 1.5
        assert o.inet_down_mbps >= 300 and o.cuda_max_good >= 12.4 and o.geolocation[-2:] in req.regions
        assert o.raw["search"]["diskHour"] == pytest.approx(o.storage_cost_per_gb_month * 100 / 720)
    assert not await provider.search(OfferRequest(gpu_names=["RTX 4090"], min_vram_gb=40))


async def test_create_that_times_out_after_the_server_acted_is_found_by_label(fake, sleeps):
    async with VastClient(fake.url, API_KEY, sleep=sleeps, timeout=0.3) as c:
        offer = await _cheapest_4090(c)
        fake.fail_next(1, 200, path_contains="/asks/", act_first=True, delay_s=1.0)
        res = await c.create_instance(offer["id"], image="i", label="lora-cloud:slow", disk_gb=10)
    assert res["recovered"] is True and fake.state.created_count == 1
    assert list(fake.state.instances) == [res["new_contract"]]


async def test_the_key_never_reaches_logs_or_errors(fake, caplog, sleeps):
    import logging

    caplog.set_level(logging.DEBUG)
    async with VastClient(fake.url, API_KEY, sleep=sleeps) as c:
        fake.fail_next(2, 503)
        await c.list_instances()
        with pytest.raises(ProviderAPIError) as ei:
            await c.set_label(1, "x")  # no such instance: 404
    assert API_KEY not in caplog.text and API_KEY not in str(ei.value) and API_KEY not in ei.value.body


async def test_charges_are_checked_and_paging_is_bounded(fake, clock, client):
    from comfy_lora_cloud.providers.vast import MAX_CHARGE_PAGES

    row = await _cheapest_4090(client)
    made = await client.create_instance(row["id"], image="i", label=run_label("r1"), disk_gb=10)
    clock.advance(3600)
    iid = made["new_contract"]
    fake.charges_script = {"extra_rows": [{"source": "instance-77", "amount": -10000},
                                          {"source": "instance-78", "amount": "abc"},
                                          {"source": "instance-78", "amount": 1.0},
                                          {"amount": 2.0}]}
    report = await client.charge_report(clock.now - 86400, clock.now)
    assert report.complete and [r["source"] for r in report.rows] == [f"instance-{iid}"]  # 78's good row too is out
    assert len(report.problems) == 3 and any("-10000" in p for p in report.problems)

    for script, words in (({"next_token": "same"}, "repeats"), ({"next_token": "endless"}, "did not end"),
                          ({"replace": {"results": "garbage"}}, "not a list"), ({"replace": [1]}, "not an object")):
        fake.charges_script = script
        report = await client.charge_report(clock.now - 86400, clock.now)
        assert not report.complete and words in report.problems[-1], (script, report.problems)
        with pytest.raises(ProviderAPIError, match=words):
            await client.charges(clock.now - 86400, clock.now)
    calls = [p for _, p in fake.state.requests if p == "/api/v0/charges"]
    assert len(calls) < 2 * (MAX_CHARGE_PAGES + 4) + 8  # the endless paging stopped


async def test_a_listing_that_does_not_end_is_an_error_not_a_short_list(fake, client):
    fake.listing_token = "same"
    with pytest.raises(ProviderAPIError, match="did not end"):
        await client.list_instances()


def test_garbage_numbers_in_a_listed_instance_read_as_zero():
    from comfy_lora_cloud.providers.vast import instance_from_vast

    inst = instance_from_vast({"id": 5, "label": "lora-cloud:r", "dph_total": "abc", "start_date": float("nan"),
                               "num_gpus": None, "ssh_port": "x", "search": "no", "actual_status": ["?"]})
    assert (inst.id, inst.run_id, inst.dph_total, inst.created_at, inst.num_gpus, inst.ssh_port) == \
        ("5", "r", 0.0, 0.0, 1, None)
    assert inst.state is InstanceState.UNKNOWN
