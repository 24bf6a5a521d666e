"""GPU offers: the one the picker would rent for a job (cheapest expected total, not cheapest
$/hr), and the GPU models a user may ask for. Used by ``lora-cloud offers``, ``train plan --live``
and the Launch node's GPU list."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any, TYPE_CHECKING

from ...models import Offer
from ...providers import pricing

if TYPE_CHECKING:
    from ..core import Core

#: how the bundled book's figures may be quoted (it is synthetic: see its "_about")
BOOK_SOURCE = "the bundled offer book (comfy_lora_cloud/data/offer_book.json: estimated prices, not live)"


@lru_cache(maxsize=1)
def _book_rows() -> tuple[dict[str, Any], ...]:
    text = resources.files("comfy_lora_cloud").joinpath("data", "offer_book.json").read_text("utf-8")
    return tuple(json.loads(text)["offers"])


def book_offers(job: pricing.Job, gpu: str | None = None) -> list[Offer]:
    """The bundled offer book as vast.ai would quote it for ``job`` (single-GPU offers, the disk's
    storage price added per hour as vast.ai does): an estimate of the market that needs no
    account, for ``lora-cloud train plan`` on a fresh machine."""
    from ...providers.vast import offer_from_vast

    out = []
    for row in _book_rows():
        if int(row.get("num_gpus") or 1) != 1 or (gpu is not None and row.get("gpu_name") != gpu):
            continue
        gpu_dph = float(row["min_bid"] if job.interruptible else row["dph_base"])
        dph_total = gpu_dph + float(row.get("storage_cost") or 0) * job.disk_gb / 720.0
        out.append(offer_from_vast({**row, "dph_total": round(dph_total, 6), "is_bid": job.interruptible}))
    return out


def gpu_choices() -> list[str]:
    """``auto`` (the picker) and every GPU model the throughput table knows."""
    return ["auto"] + sorted(pricing.throughput_table()["gpus"])


class Offers:
    def __init__(self, core: Core):
        self.core = core

    def job(self, *, preset: str, tier: int, steps: int | None = None, images: int | None = None,
            resolution: int = 1024, interruptible: bool = False, max_dph: float | None = None,
            min_reliability: float = 0.95, disk_gb: float = 80.0) -> pricing.Job:
        """A pricing job; steps default to the preset's for ``images`` photos, max $/hr to the budget."""
        from ...training.estimate import preset_steps

        return pricing.Job(preset=preset, resolution=resolution, tier=tier,
                           steps=steps or preset_steps(preset, images, tier), interruptible=interruptible,
                           max_dph=self.core.settings.max_dph if max_dph is None else max_dph,
                           min_reliability=min_reliability, disk_gb=disk_gb)

    def pick_from_book(self, job: pricing.Job, gpu: str | None = None) -> pricing.Pick:
        """What the picker would choose from the bundled book (no account, nothing rented)."""
        return pricing.rank_offers(book_offers(job, gpu), job)

    async def pick(self, job: pricing.Job) -> pricing.Pick:
        async with self.core.provider("vast")() as provider:
            return await pricing.pick_offer(provider, job)
