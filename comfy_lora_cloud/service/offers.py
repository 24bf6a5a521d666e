"""GPU offers: the one the picker would rent for a job (cheapest expected total, not cheapest
$/hr), and the GPU models a user may ask for. Used by ``lora-cloud offers``, ``train plan --live``
and the Launch node's GPU list."""

from __future__ import annotations

from typing import Any

from ..providers import pricing


def gpu_choices() -> list[str]:
    """``auto`` (the picker) and every GPU model the throughput table knows."""
    return ["auto"] + sorted(pricing.throughput_table()["gpus"])


class Offers:
    def __init__(self, app: Any):
        self.app = app

    def job(self, *, preset: str, tier: int, steps: int | None = None, images: int | None = None,
            resolution: int = 1024, interruptible: bool = False, max_dph: float | None = None,
            min_reliability: float = 0.95, disk_gb: float = 80.0) -> pricing.Job:
        """A pricing job; steps default to the preset's for ``images`` photos, max $/hr to the budget."""
        from ..training.estimate import preset_steps

        return pricing.Job(preset=preset, resolution=resolution, tier=tier,
                           steps=steps or preset_steps(preset, images, tier), interruptible=interruptible,
                           max_dph=self.app.settings.max_dph if max_dph is None else max_dph,
                           min_reliability=min_reliability, disk_gb=disk_gb)

    async def pick(self, job: pricing.Job) -> pricing.Pick:
        async with self.app.provider("vast")() as provider:
            return await pricing.pick_offer(provider, job)
