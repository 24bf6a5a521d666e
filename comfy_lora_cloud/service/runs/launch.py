"""Launch a run on a provider so that a crash at any point leaves nothing billing unowned.

The order is the whole point:

1. the run is written to the state store as LAUNCHING (the intent) before anything is rented;
2. the create call carries the label ``lora-cloud:<run_id>`` (the client resolves a lost answer
   by that label, so one launch is at most one instance);
3. the instance id is recorded on the run right after.

A crash between 1 and 2 leaves a LAUNCHING run with no instance (reconcile marks it FAILED; a
retry of the same launch, which would otherwise attach to it, fails it first and starts afresh:
:func:`settle_unfinished_launch`); a crash between 2 and 3 leaves a labelled instance that
reconcile adopts into its live run. A launch that fails cleanly destroys whatever its label finds
and marks the run FAILED. ``on_step`` is called after each step (tests use it to crash the
controller there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, Awaitable, Callable

from ...errors import LoraCloudError, StorageError
from ...models import Instance, Offer, Run, RunState
from ...providers.base import LaunchSpec, Provider, run_label
from ...storage.base import Storage, pid_alive
from ...training.status import end_run_in_bucket
from ..money.budgets import Budgets, check_launch
from ..money.costs import CostLedger
from ..home.state import StateStore

log = logging.getLogger(__name__)

STEPS = ("intent_recorded", "created", "recorded")
UNFINISHED = (RunState.PENDING, RunState.LAUNCHING)  # the intent is recorded, no instance yet
#: a launch with no instance this long after its last step died (reconcile's grace period)
LAUNCH_WINDOW_S = 120.0
INTERRUPTED_LAUNCH = "the launch was interrupted before an instance was created"


def launcher() -> dict[str, Any]:
    """Who is launching (kept in the run's record): a retry on this machine can tell at once
    whether that process is gone."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def dead_launch(run: Run, now: float, window_s: float = LAUNCH_WINDOW_S) -> str | None:
    """Why the launch of ``run`` (intent recorded, no instance) can no longer create one, or None
    while it may still be under way: its process on this machine is gone, or it made no step for
    ``window_s``."""
    if run.instance_id or run.state not in UNFINISHED:
        return None
    who = run.spec.get("launcher") if isinstance(run.spec, dict) else None
    pid = who.get("pid") if isinstance(who, dict) else None
    if isinstance(pid, int) and not isinstance(pid, bool) and who.get("host") == socket.gethostname() \
            and pid != os.getpid() and not pid_alive(pid):
        return f"{INTERRUPTED_LAUNCH} (its process {pid} is gone)"
    if now - run.updated_at >= window_s:
        return INTERRUPTED_LAUNCH
    return None


async def settle_unfinished_launch(run: Run, *, state: StateStore, storage: Storage, provider: Provider,
                                   clock: Callable[[], float] = time.time,
                                   sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                                   window_s: float = LAUNCH_WINDOW_S, poll_s: float = 0.5) -> Run:
    """A live run found by a retry of its launch, before any instance was recorded: never
    something to attach to as it is. While its launch may still be under way, wait for it (it
    records its instance, or fails). Once it cannot (:func:`dead_launch`): an instance with its
    label (the launch died between create and record) is recorded on it, so the retry attaches
    to that; else the run ends FAILED, in the bucket first, so the retry starts afresh. Returns
    the run as it stands then; a provider that cannot be asked raises (never rent twice)."""
    while True:
        current = await asyncio.to_thread(state.get_run, run.id)
        if current is None or current.state not in UNFINISHED or current.instance_id:
            return current or run
        why = dead_launch(current, clock(), window_s)
        if why is not None:
            label = run_label(run.id)
            created = [i for i in await provider.list(label) if i.label == label]
            if created:
                await asyncio.to_thread(_record, state, run.id, created[0], clock())
                return await asyncio.to_thread(state.get_run, run.id) or current
            try:
                await asyncio.to_thread(end_run_in_bucket, storage, run.id, RunState.FAILED, why)
            except StorageError as exc:  # the retry's own launch writes there next, and says so if it cannot
                log.warning("could not mark run %s failed in the bucket: %s", run.id, exc.message)
            return await asyncio.to_thread(state.update_run, run.id, state=RunState.FAILED, error=why)
        await sleep(poll_s)


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
    run.spec = {**run.spec, "offer_id": offer.id, "label": spec.label, "launcher": launcher()}
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
