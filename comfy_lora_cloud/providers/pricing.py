"""The offer picker: the cheapest *expected total* for a training job, not the lowest $/hr.

For one offer (``data/gpu_throughput.json`` gives every figure and its source)::

    pull_s   = image_gb at the host's effective download speed     (loading: storage billed only)
    run_s    = weights_gb download + fixed_s + steps x s_per_step  (running: GPU + storage billed)
    run_s   *= 1 + overhead, down_s = preemptions x (wait + pull)   (bid instances: preemption_overhead)
    cost     = gpu_dph x run_s + disk_dph x (pull_s + run_s + down_s)
    expected = cost x (1 + (1 - reliability))                      (a failed host costs about one retry)

The overhead of an interruptible offer comes from a model (:func:`preemption_overhead`), not a
constant: preemptions arrive at ``preemption_rate_per_hour`` of running time; each one repeats the
training since the last checkpoint plus the restart (weights + setup) on a new host, and adds
unbilled-GPU downtime (the wait for the old host, the image pull on the new one).
``benchmarks/interruptible.py`` checks it against a simulation of the recovery policy and prints
interruptible against on-demand on the offer book for a range of rates.

Hard constraints (VRAM floor of the preset tier, host RAM, disk, reliability, max $/hr,
interruptible or not) filter first; an offer whose GPU has no throughput figure is skipped and
said so. :func:`pick_offer` returns the choice with its breakdown and the runners-up, so
``lora-cloud offers --for character`` can explain itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

from ..errors import ConfigError, OfferUnavailable
from ..models import Offer
from .base import OfferRequest

TIER_VRAM_GB = {24: 23.0, 48: 39.0, 80: 79.0}  # cards report a little under their nominal size


@lru_cache(maxsize=1)
def throughput_table() -> dict[str, Any]:
    text = resources.files("comfy_lora_cloud").joinpath("data", "gpu_throughput.json").read_text("utf-8")
    return json.loads(text)


def seconds_per_step(gpu_name: str, resolution: int) -> float | None:
    gpu = throughput_table()["gpus"].get(gpu_name)
    if gpu is None:
        return None
    figures = {int(k): float(v) for k, v in gpu["s_per_step"].items()}
    if resolution in figures:
        return figures[resolution]
    if 1024 in figures and 512 in figures:  # quadratic in pixels between the two anchors (estimate)
        lo, hi = figures[512], figures[1024]
        frac = (resolution ** 2 - 512 ** 2) / (1024 ** 2 - 512 ** 2)
        return lo + (hi - lo) * frac
    return None


@dataclass
class Job:
    """What the picker prices: a preset's steps at one resolution, plus the hard constraints."""

    preset: str = "character"
    resolution: int = 1024
    steps: int = 1600  # batch-1 steps; training.estimate.preset_steps gives a preset's figure
    tier: int = 24  # VRAM floor: 24, 48 or 80 GB
    disk_gb: float = 80.0
    min_ram_gb: float = 32.0
    min_reliability: float = 0.95
    max_dph: float | None = None
    interruptible: bool = False
    verified: bool | None = True
    # the preemption model (interruptible offers only); None: the throughput table's rate
    preemption_rate: float | None = None  # preemptions per hour of running
    checkpoint_s: float = 600.0  # training between two checkpoints (settings.preempt_checkpoint_minutes)
    resume_wait_s: float = 0.0  # how long recovery waits for the old host before moving

    def __post_init__(self) -> None:
        if self.max_dph is not None:
            if isinstance(self.max_dph, bool) or not math.isfinite(self.max_dph) or self.max_dph < 0:
                raise ConfigError(f"max $/hr must be a finite number, at least 0, not {self.max_dph!r}")
            if self.max_dph == 0:  # 0 turns the $/hr limit off, as it does for the budgets
                self.max_dph = None
        if self.tier not in TIER_VRAM_GB:
            raise ConfigError(f"tier must be one of {sorted(TIER_VRAM_GB)} (GB of GPU memory)")
        if self.steps <= 0:
            raise ConfigError("a job needs a positive number of training steps")

    def request(self) -> OfferRequest:
        return OfferRequest(min_vram_gb=TIER_VRAM_GB[self.tier], min_ram_gb=self.min_ram_gb, min_disk_gb=self.disk_gb,
                            min_reliability=self.min_reliability, verified=self.verified,
                            interruptible=self.interruptible, max_dph=self.max_dph,
                            allocated_storage_gb=self.disk_gb)


@dataclass
class Estimate:
    offer: Offer
    gpu_dph: float
    disk_dph: float
    pull_s: float
    weights_s: float
    fixed_s: float
    train_s: float
    run_s: float
    cost: float
    expected_cost: float
    preemptions: float = 0.0  # expected number (interruptible offers)
    down_s: float = 0.0  # expected seconds without a GPU after preemptions (disk still billed)

    @property
    def hours(self) -> float:
        return (self.pull_s + self.run_s + self.down_s) / 3600.0

    def to_dict(self) -> dict[str, Any]:
        o = self.offer
        return {"offer_id": o.id, "gpu": o.gpu_name, "num_gpus": o.num_gpus, "dph_total": round(o.dph_total, 4),
                "reliability": o.reliability, "inet_down_mbps": o.inet_down_mbps, "interruptible": o.interruptible,
                "geolocation": o.geolocation, "pull_min": round(self.pull_s / 60, 1),
                "weights_min": round(self.weights_s / 60, 1), "fixed_min": round(self.fixed_s / 60, 1),
                "train_min": round(self.train_s / 60, 1), "hours": round(self.hours, 2),
                "preemptions": round(self.preemptions, 2),
                "cost_usd": round(self.cost, 3), "expected_usd": round(self.expected_cost, 3)}


def estimate(offer: Offer, job: Job) -> Estimate | None:
    """The expected cost of ``job`` on ``offer``, or None when its GPU has no throughput figure."""
    sps = seconds_per_step(offer.gpu_name, job.resolution)
    if sps is None:
        return None
    ov = {k: float(v["value"]) for k, v in throughput_table()["job_overheads"].items()}
    disk_dph = offer.storage_cost_per_gb_month * job.disk_gb / 720.0
    gpu_dph = max(offer.dph_total - disk_dph, 0.0)
    mbps = max(min(offer.inet_down_mbps, ov["download_cap_mbps"]) * ov["download_efficiency"], 1.0)
    pull_s = ov["image_gb"] * 8000.0 / mbps
    weights_s = ov["weights_gb"] * 8000.0 / mbps
    train_s = job.steps * sps
    run_s = weights_s + ov["fixed_s"] + train_s
    preemptions = down_s = 0.0
    if offer.interruptible:
        rate = ov["preemption_rate_per_hour"] if job.preemption_rate is None else job.preemption_rate
        p = preemption_overhead(train_s=train_s, restart_s=weights_s + ov["fixed_s"], checkpoint_s=job.checkpoint_s,
                                rate_per_hour=rate, downtime_s=job.resume_wait_s + pull_s)
        run_s, preemptions, down_s = p.run_s, p.preemptions, p.down_s
    cost = (gpu_dph * run_s + disk_dph * (pull_s + run_s + down_s)) / 3600.0
    expected = cost * (1.0 + (1.0 - min(max(offer.reliability, 0.0), 1.0)))
    return Estimate(offer, gpu_dph, disk_dph, pull_s, weights_s, ov["fixed_s"], train_s, run_s, cost, expected,
                    preemptions, down_s)


@dataclass(frozen=True)
class PreemptionCost:
    base_s: float  # running seconds without preemptions
    run_s: float  # expected running (GPU-billed) seconds, repeated work included
    preemptions: float  # expected number of preemptions
    down_s: float  # expected seconds between a preemption and the next start (no GPU billed)

    @property
    def overhead(self) -> float:
        """Extra running time as a share of the uninterrupted run (what used to be a constant)."""
        return self.run_s / self.base_s - 1.0 if self.base_s > 0 else 0.0


MAX_PREEMPTION_FACTOR = 10.0  # a run expected to repeat more than this is priced at this (it never ends)


def preemption_overhead(*, train_s: float, restart_s: float, checkpoint_s: float, rate_per_hour: float,
                        downtime_s: float) -> PreemptionCost:
    """The expected running time and preemptions of a run of ``restart_s`` (weights + setup)
    then ``train_s`` of training, checkpointed every ``checkpoint_s`` of training.

    Preemptions come as a Poisson process at ``rate_per_hour`` per hour of *running* (a stopped
    instance cannot be outbid again). A preempted attempt loses the training since the last
    checkpoint; the next one repeats the restart on a new host, then goes on from that checkpoint,
    after ``downtime_s`` without a GPU (the wait for the old host, the image pull).

    Exact for that model: the run is a chain of checkpoint intervals. The first needs
    ``restart + c`` without a preemption; each later one first gets one try of ``c`` as the run
    goes on (it fails with ``q = 1 - exp(-l c)``, having run ``q / l`` on average), and after a
    failure needs ``restart + c`` uninterrupted. A task needing ``L`` uninterrupted seconds takes
    ``(exp(l L) - 1) / l`` running seconds and ``exp(l L) - 1`` preemptions on average.
    ``benchmarks/interruptible.py`` checks this against a simulation.
    """
    base = restart_s + train_s
    lam = rate_per_hour / 3600.0
    if lam <= 0 or base <= 0:
        return PreemptionCost(base, base, 0.0, 0.0)
    c = checkpoint_s if 0 < checkpoint_s < train_s else max(train_s, 0.0)
    whole, rest = divmod(train_s, c) if c > 0 else (0.0, 0.0)
    intervals = [c] * int(whole) + ([rest] if rest > 1e-9 else [])
    if not intervals:
        intervals = [0.0]

    def from_scratch(length: float) -> tuple[float, float]:
        grown = math.expm1(min(lam * length, 50.0))
        return grown / lam, grown

    total, n = from_scratch(restart_s + intervals[0])
    for interval in intervals[1:]:
        q = -math.expm1(-lam * interval)
        t, f = from_scratch(restart_s + interval)
        total += q / lam + q * t
        n += q * (1.0 + f)
    if total > MAX_PREEMPTION_FACTOR * base:
        n *= MAX_PREEMPTION_FACTOR * base / total
        total = MAX_PREEMPTION_FACTOR * base
    return PreemptionCost(base, total, n, n * downtime_s)


def eligible(offer: Offer, job: Job) -> bool:
    """The hard constraints, checked locally too (a search result is not trusted blindly)."""
    return (offer.gpu_ram_gb >= TIER_VRAM_GB[job.tier] and offer.cpu_ram_gb >= job.min_ram_gb
            and offer.disk_gb >= job.disk_gb and offer.reliability >= job.min_reliability
            and (job.max_dph is None or offer.dph_total <= job.max_dph)
            and offer.interruptible == job.interruptible
            and (job.verified is None or offer.verified == job.verified))


@dataclass
class Pick:
    best: Estimate
    ranked: list[Estimate]
    cheapest_dph: Estimate
    skipped_unknown_gpu: list[str] = field(default_factory=list)
    considered: int = 0

    def explain(self) -> str:
        b, c = self.best, self.cheapest_dph
        lines = [
            f"picked offer {b.offer.id}: {b.offer.num_gpus}x {b.offer.gpu_name} at ${b.offer.dph_total:.3f}/hr "
            f"-> expected ${b.expected_cost:.2f} ({b.hours:.2f} h: pull {b.pull_s / 60:.0f} min, weights "
            f"{b.weights_s / 60:.0f} min, setup {b.fixed_s / 60:.0f} min, training {b.train_s / 60:.0f} min)",
        ]
        if c.offer.id != b.offer.id:
            lines.append(
                f"the lowest $/hr offer ({c.offer.gpu_name} at ${c.offer.dph_total:.3f}/hr) would cost "
                f"${c.expected_cost:.2f} expected: {c.hours:.2f} h at {c.train_s / max(b.train_s, 1):.1f}x the "
                f"training time" + (f" and a {c.offer.inet_down_mbps:.0f} Mb/s download" if c.pull_s > b.pull_s else ""))
        lines.append(f"{self.considered} offers met the constraints")
        if self.skipped_unknown_gpu:
            lines.append("skipped (no throughput figure): " + ", ".join(sorted(set(self.skipped_unknown_gpu))))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict(), "cheapest_dph": self.cheapest_dph.to_dict(),
                "runners_up": [e.to_dict() for e in self.ranked[1:5]], "considered": self.considered,
                "skipped_unknown_gpu": sorted(set(self.skipped_unknown_gpu)), "explanation": self.explain()}


def rank_offers(offers: Iterable[Offer], job: Job) -> Pick:
    """Rank eligible offers by expected total cost (lowest first)."""
    ranked: list[Estimate] = []
    skipped: list[str] = []
    for offer in offers:
        if not eligible(offer, job):
            continue
        est = estimate(offer, job)
        if est is None:
            skipped.append(offer.gpu_name)
            continue
        ranked.append(est)
    if not ranked:
        raise OfferUnavailable(f"no offer meets the constraints for a {job.preset} job at {job.resolution} px "
                               f"(tier {job.tier} GB, reliability >= {job.min_reliability}, max $/hr {job.max_dph})")
    ranked.sort(key=lambda e: (e.expected_cost, e.offer.dph_total))
    cheapest = min(ranked, key=lambda e: (e.offer.dph_total, e.expected_cost))
    return Pick(ranked[0], ranked, cheapest, skipped, len(ranked))


async def pick_offer(provider: Any, job: Job) -> Pick:
    """Search ``provider`` with the job's hard constraints and rank what comes back."""
    return rank_offers(await provider.search(job.request()), job)
