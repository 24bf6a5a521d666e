"""The offer picker: expected total, not $/hr; constraints; explanation; the recorded book."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import OfferUnavailable
from comfy_lora_cloud.models import Offer
from comfy_lora_cloud.providers.pricing import Job, estimate, pick_offer, rank_offers, seconds_per_step, throughput_table
from comfy_lora_cloud.providers.vast import VastClient, VastProvider
from comfy_lora_cloud.training.estimate import preset_steps
from tests.vast.conftest import API_KEY


def _offer(i, gpu, dph, *, vram=24, mbps=1000, rel=0.99, bid=False, ram=64, disk=200, storage=0.2):
    return Offer(id=i, gpu_name=gpu, gpu_ram_gb=vram, cpu_ram_gb=ram, disk_gb=disk, dph_total=dph,
                 storage_cost_per_gb_month=storage, inet_down_mbps=mbps, reliability=rel, verified=True,
                 interruptible=bid)


def test_every_throughput_figure_has_a_source():
    table = throughput_table()
    for name, gpu in table["gpus"].items():
        assert gpu["source"] and gpu["s_per_step"], name
    for name, item in table["job_overheads"].items():
        assert item["source"] and "value" in item, name


def test_interpolates_resolution_between_anchors():
    lo, hi = seconds_per_step("RTX 4090", 512), seconds_per_step("RTX 4090", 1024)
    assert lo < seconds_per_step("RTX 4090", 768) < hi
    assert seconds_per_step("Unknown GPU", 1024) is None


def test_cheap_but_slow_loses_to_fast():
    job = Job(preset="character", resolution=1024, steps=1600)
    slow = _offer(1, "RTX 3090", 0.20, mbps=150)  # cheapest $/hr, slow GPU and slow download
    fast = _offer(2, "RTX 4090", 0.30, mbps=3000)
    pick = rank_offers([slow, fast], job)
    assert pick.best.offer.id == 2 and pick.cheapest_dph.offer.id == 1
    assert pick.best.expected_cost < pick.cheapest_dph.expected_cost
    text = pick.explain()
    assert "RTX 4090" in text and "lowest $/hr offer (RTX 3090" in text


def test_constraints_filter_and_unknown_gpus_are_reported():
    job = Job(preset="style", resolution=1024, tier=48, steps=2500, max_dph=1.0, min_reliability=0.98)
    offers = [
        _offer(1, "RTX 4090", 0.3),  # too little VRAM for the 48 tier
        _offer(2, "A40", 0.4, vram=48, rel=0.90),  # unreliable
        _offer(3, "A40", 1.2, vram=48),  # over max $/hr
        _offer(4, "A40", 0.45, vram=48, ram=16),  # too little RAM
        _offer(5, "Mystery GPU", 0.1, vram=48),
        _offer(6, "A40", 0.5, vram=48, disk=40),  # too little disk
        _offer(7, "A40", 0.5, vram=48),
        _offer(8, "A40", 0.3, vram=48, bid=True),  # interruptible not wanted
    ]
    pick = rank_offers(offers, job)
    assert [e.offer.id for e in pick.ranked] == [7]
    assert pick.skipped_unknown_gpu == ["Mystery GPU"]
    with pytest.raises(OfferUnavailable):
        rank_offers(offers[:4], job)


def test_interruptible_costs_more_time_but_may_win_on_price():
    on = _offer(1, "RTX 4090", 0.40)
    bid = _offer(2, "RTX 4090", 0.20, bid=True)
    e_on = estimate(on, Job(steps=1000))
    e_bid = estimate(bid, Job(steps=1000, interruptible=True))
    assert e_bid.run_s > e_on.run_s and e_bid.expected_cost < e_on.expected_cost


def test_loading_is_storage_only():
    e = estimate(_offer(1, "RTX 4090", 0.5, mbps=100, storage=0.0), Job(steps=100))
    assert e.cost == pytest.approx(0.5 * e.run_s / 3600)  # image pull time not GPU-billed


async def test_pick_through_the_fake_matches_brute_force(fake):
    job = Job(preset="character", resolution=1024, steps=preset_steps("character"))
    async with VastClient(fake.url, API_KEY) as client:
        pick = await pick_offer(VastProvider(client), job)
    assert pick.considered > 20
    assert all(e.offer.gpu_ram_gb >= 23 and e.offer.reliability >= 0.95 for e in pick.ranked)
    assert pick.best.expected_cost <= pick.cheapest_dph.expected_cost
    d = pick.to_dict()
    assert d["best"]["offer_id"] == pick.best.offer.id and d["explanation"]


def test_interruptible_overhead_comes_from_the_preemption_model():
    import math

    from comfy_lora_cloud.providers.pricing import preemption_overhead

    bid = _offer(2, "RTX 4090", 0.20, bid=True)
    base = estimate(_offer(1, "RTX 4090", 0.20), Job(steps=1000))
    calm = estimate(bid, Job(steps=1000, interruptible=True, preemption_rate=0.0))
    assert calm.run_s == pytest.approx(base.run_s) and calm.preemptions == 0  # no preemptions, no overhead
    runs = [estimate(bid, Job(steps=1000, interruptible=True, preemption_rate=r)) for r in (0.1, 0.5, 2.0)]
    assert base.run_s < runs[0].run_s < runs[1].run_s < runs[2].run_s  # more preemptions, more repeated work
    assert 0 < runs[0].preemptions < runs[1].preemptions < runs[2].preemptions
    assert runs[1].down_s == pytest.approx(runs[1].preemptions * runs[1].pull_s)  # a new host pulls the image
    # one checkpoint interval: a task that needs L s uninterrupted takes (e^(lL) - 1) / l on average
    p = preemption_overhead(train_s=3000, restart_s=600, checkpoint_s=5000, rate_per_hour=1.0, downtime_s=0)
    lam = 1 / 3600
    assert p.run_s == pytest.approx(math.expm1(lam * 3600) / lam) and p.preemptions == pytest.approx(math.e - 1)
    # shorter checkpoint intervals lose less per preemption
    short = preemption_overhead(train_s=3000, restart_s=600, checkpoint_s=300, rate_per_hour=1.0, downtime_s=0)
    assert base.run_s and short.run_s < p.run_s and short.overhead < p.overhead
    # the picker's default rate is the table's, with its source
    table = throughput_table()["job_overheads"]
    assert "interruptible_overhead" not in table and table["preemption_rate_per_hour"]["source"]
    default = estimate(bid, Job(steps=1000, interruptible=True))
    assert default.run_s == pytest.approx(estimate(bid, Job(steps=1000, interruptible=True, preemption_rate=float(
        table["preemption_rate_per_hour"]["value"]))).run_s)


def test_interruptible_epochs_fit_the_checkpoint_bound_on_the_slowest_gpu():
    from comfy_lora_cloud.providers.pricing import TIER_VRAM_GB
    from comfy_lora_cloud.training.estimate import interruptible_overrides
    from comfy_lora_cloud.training.presets import load_preset, plan_steps

    gpus = throughput_table()["gpus"]
    slowest = max(seconds_per_step(g, 1024) or 0 for g, v in gpus.items() if v["vram_gb"] >= TIER_VRAM_GB[24])
    for images in (3, 20, 30):
        extra = interruptible_overrides("character", 24, {}, images, minutes=10)
        plan, usual = plan_steps(load_preset("character", 24, extra), images), plan_steps(load_preset("character", 24),
                                                                                          images)
        assert plan.steps_per_epoch * slowest <= 10 * 60 < usual.steps_per_epoch * slowest
        assert abs(plan.total_steps - usual.total_steps) <= usual.steps_per_epoch  # the same training, cut finer
        samples = plan.epochs // extra["sample_every_n_epochs"]
        assert abs(samples - usual.epochs // 2) <= 1  # samples as often as the preset plans, not every short epoch
    on_4090 = interruptible_overrides("character", 24, {}, 20, minutes=10, gpu_name="RTX 4090")
    assert plan_steps(load_preset("character", 24, on_4090), 20).steps_per_epoch * 4.5 <= 600
    assert interruptible_overrides("character", 24, {"subset.num_repeats": 9}, 20, minutes=10) == {}  # the user's wins
