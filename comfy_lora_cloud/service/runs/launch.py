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

from ...errors import LoraCloudError
from ...models import Instance, Offer, Run, RunState
from ...providers.base import LaunchSpec, Provider, run_label
from ...storage.base import Storage, pid_alive
from ..money import Budgets, check_launch
from ..money import CostLedger
from ..home import StateStore
from ..money import destroy_instance
from ..money import Problems
from .lifecycle import end_run, pending_end

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
        # an end the bucket has not taken yet: the launch is over, though the store waits for the bucket
        why = await asyncio.to_thread(pending_end, state, run.id) or dead_launch(current, clock(), window_s)
        if why is not None:
            label = run_label(run.id)
            created = [i for i in await provider.list(label) if i.label == label]
            if created:
                await asyncio.to_thread(_record, state, run.id, created[0], clock())
                return await asyncio.to_thread(state.get_run, run.id) or current
            return await _fail(state, storage, run.id, why)
        await sleep(poll_s)


async def launch_run(provider: Provider, state: StateStore, run: Run, offer: Offer, spec: LaunchSpec, *,
                     budgets: Budgets | None = None, expected_usd: float | None = None,
                     clock: Callable[[], float] = time.time,
                     on_step: Callable[[str], None] | None = None,
                     storage: Storage | None = None, ends_run: bool = True) -> Instance:
    """Rent ``offer`` for ``run`` (intent -> create -> record). Returns the instance.

    A create that fails destroys whatever the run's label finds, then (``ends_run``) ends the
    run FAILED through :func:`~.lifecycle.end_run`: in ``storage`` first when given, then in the
    store. The recovery's relaunch passes ``ends_run=False``: a failed attempt leaves the run to
    it (back to PREEMPTED, tried again next round), never ended."""
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
        await _clean_up_failed(provider, state, run, clock)
        if ends_run:
            await _fail(state, storage, run.id, f"launch failed: {exc.message}")
        raise
    step("created")
    inst.run_id = run.id
    await asyncio.to_thread(_record, state, run.id, inst, clock())
    step("recorded")
    return inst


def _record(state: StateStore, run_id: str, inst: Instance, now: float) -> None:
    state.put_instance(inst, run_id, seen_at=now)  # its age counts from here, on our clock
    state.update_run(run_id, instance_id=str(inst.id), state=RunState.STARTING)


async def _clean_up_failed(provider: Provider, state: StateStore, run: Run, clock: Callable[[], float]) -> None:
    """Destroy anything the failed launch may have created (found by label)."""
    label = run_label(run.id)
    problems = Problems()
    try:
        found = [i for i in await provider.list(label) if i.label == label]
    except LoraCloudError as exc:  # reconcile destroys it later: the run is terminal now
        log.warning("cleanup after a failed launch of %s failed: %s", run.id, exc.message)
        return
    for inst in found:
        await destroy_instance(provider, state, str(inst.id), why=f"the launch of run {run.id} failed",
                               label=label, clock=clock, problems=problems)
    for problem in problems:  # reconcile destroys it later: the run is terminal now
        log.warning("cleanup after a failed launch of %s failed: %s", run.id, problem.message)


async def _fail(state: StateStore, storage: Storage | None, run_id: str, why: str) -> Run:
    """End the run FAILED (the bucket first); an end the bucket cannot take now is written again
    by the next guard round, and the record is returned as it stands meanwhile."""
    ended = await asyncio.to_thread(end_run, state, storage, run_id, RunState.FAILED, why)
    if ended.problem:
        log.warning("could not mark run %s failed in the bucket (written again by the guard): %s", run_id,
                    ended.problem)
    return await asyncio.to_thread(state.get_run, run_id)
