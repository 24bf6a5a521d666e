"""`lora-cloud offers`: the offer the picker would rent for a job, and why."""

from __future__ import annotations

from typing import Optional

import typer

from .common import ctx_obj, emit, finite, handle_errors, out_console, run

app = typer.Typer()  # its help: cli/main.py NOUNS


@app.callback(invoke_without_command=True)
@handle_errors
def offers(
    ctx: typer.Context,
    preset: str = typer.Option("character", "--for", help="LoRA preset: character, style or concept."),
    resolution: int = typer.Option(1024, min=256, max=2048, help="Training resolution in pixels."),
    tier: int = typer.Option(24, help="VRAM floor in GB: 24, 48 or 80."),
    images: Optional[int] = typer.Option(None, min=1, max=100_000, help="Dataset size (default: typical for the preset)."),
    steps: Optional[int] = typer.Option(None, min=1, max=1_000_000, show_default=False,
                                        help="Training steps (default: from the preset)."),
    interruptible: bool = typer.Option(False, help="Price interruptible (bid) offers instead of on-demand."),
    max_dph: Optional[float] = typer.Option(None, min=0, callback=finite,
                                            help="Most $/hr to pay (default: the max_dph budget; 0: no limit)."),
    min_reliability: float = typer.Option(0.95, min=0, max=1, callback=finite, help="Lowest host reliability (0-1)."),
    disk_gb: float = typer.Option(80.0, min=10, max=10_000, callback=finite, help="Disk to rent, GB."),
) -> None:
    """Rank offers by expected job cost (download + setup + training time at each GPU's speed)."""
    offers_ = ctx_obj(ctx).app.offers
    job = offers_.job(preset=preset, tier=tier, steps=steps, images=images, resolution=resolution,
                      interruptible=interruptible, max_dph=max_dph, min_reliability=min_reliability,
                      disk_gb=disk_gb)
    pick = run(offers_.pick(job))
    data = {"job": {"preset": job.preset, "resolution": job.resolution, "steps": job.steps, "tier": job.tier,
                    "interruptible": job.interruptible, "max_dph": job.max_dph}, **pick.to_dict()}

    def human(_d: dict) -> None:
        out_console.print(pick.explain(), markup=False)
        for e in pick.ranked[1:5]:
            out_console.print(f"  runner-up {e.offer.id}: {e.offer.gpu_name} ${e.offer.dph_total:.3f}/hr "
                              f"-> ${e.expected_cost:.2f} expected", markup=False)

    emit(ctx, data, human)
