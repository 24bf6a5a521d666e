"""Launch a run on a provider so that a crash at any point leaves nothing billing unowned.

The order is the whole point:

1. the run is written to the state store as LAUNCHING (the intent) before anything is rented;
2. the create call carries the label ``lora-cloud:<run_id>`` (the client resolves a lost answer
   by that label, so one launch is at most one instance);
3. the instance id is recorded on the run right after.

A crash between 1 and 2 leaves a LAUNCHING run with no instance (reconcile marks it FAILED); a
crash between 2 and 3 leaves a labelled instance that reconcile adopts into its live run. A
launch that fails cleanly destroys whatever its label finds and marks the run FAILED.
``on_step`` is called after each step (tests use it to crash the controller there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from ..errors import LoraCloudError
from ..models import Instance, Offer, Run, RunState
from ..providers.base import LaunchSpec, Provider, run_label
from .budgets import Budgets, check_launch
from .costs import CostLedger
from .state import StateStore

log = logging.getLogger(__name__)

STEPS = ("intent_recorded", "created", "recorded")


async def launch_run(provider: Provider, state: StateStore, run: Run, offer: Offer, spec: LaunchSpec, *,
                     budgets: Budgets | None = None, expected_usd: float | None = None,
                     clock: Callable[[], float] = time.time,
                     on_step: Callable[[str], None] | None = None) -> Instance:
    """Rent ``offer`` for ``run`` (intent -> create -> record). Returns the instance."""
    step = on_step or (lambda name: None)
    if budgets is not None:
        month = await asyncio.to_thread(CostLedger(state, clock).month_usd)
        check_launch(budgets, offer.dph_total, month, expected_usd)
    spec.label = run_label(run.id)
    run.state, run.provider, run.gpu, run.dph = RunState.LAUNCHING, provider.name, offer.gpu_name, offer.dph_total
    run.spec = {**run.spec, "offer_id": offer.id, "label": spec.label}
    await asyncio.to_thread(state.put_run, run)
    step("intent_recorded")
    try:
        inst = await provider.launch(offer, spec)
    except LoraCloudError as exc:
        await _clean_up_failed(provider, state, run, exc)
        raise
    step("created")
    inst.run_id = run.id
    await asyncio.to_thread(_record, state, run.id, inst, clock())
    step("recorded")
    return inst


def _record(state: StateStore, run_id: str, inst: Instance, now: float) -> None:
    state.put_instance(inst, run_id, seen_at=now)  # its age counts from here, on our clock
    state.update_run(run_id, instance_id=str(inst.id), state=RunState.STARTING)


async def _clean_up_failed(provider: Provider, state: StateStore, run: Run, exc: LoraCloudError) -> None:
    """Destroy anything the failed launch may have created (found by label), then fail the run."""
    label = run_label(run.id)
    try:
        for inst in await provider.list(label):
            if inst.label == label:
                await provider.destroy(str(inst.id))
                await asyncio.to_thread(state.mark_instance_destroyed, provider.name, str(inst.id))
    except LoraCloudError as cleanup_exc:  # reconcile destroys it later: the run is terminal now
        log.warning("cleanup after a failed launch of %s failed: %s", run.id, cleanup_exc.message)
    await asyncio.to_thread(state.update_run, run.id, state=RunState.FAILED, error=f"launch failed: {exc.message}")
