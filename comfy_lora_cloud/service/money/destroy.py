"""Destroy an instance and record it: the only code outside ``providers/`` that calls a
provider's ``destroy``.

Every path that ends an instance comes here: the edges (``Instances.destroy``), ``train stop``
and a session's stop (``Instances.destroy_labelled``), reconcile, the sessions' guard, the budget
watchdog, the preemption recovery and a launch that failed. One call does the same four things
in the same order, so no path can forget one:

1. the provider's destroy, which confirms by reading the instance back; an instance that is
   already gone is no error (destroying twice is safe);
2. the state store's record (``destroyed``, with the time), also for one already gone;
3. the log line, naming what was destroyed, its label and why;
4. the instance event, when the caller hands an ``announce`` (an edge: every open sidebar sees
   the new list). The guard's paths send their own event instead (a budget enforced, a session
   ended), which says why.

A caller that must go on (the guard's passes, a failed launch's cleanup) passes ``problems``:
what could not be done is reported there and never raised, so one instance never stops the
others. Without ``problems`` (an edge answering a user) the error is raised as it came.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from ...errors import CorruptRecord, LoraCloudError
from ...providers.base import Provider
from ..home import StateStore
from . import problems as kinds
from .problems import Problems

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Destroyed:
    """What :func:`destroy_instance` did. ``gone``: the instance bills no more (destroyed now or
    already gone); ``existed``: it was still there to destroy; ``problem``: why it could not be
    destroyed, or (with ``gone``) why the store could not record it; ``error``: the provider's or
    the store's own words for it."""

    instance_id: str
    gone: bool
    existed: bool = False
    problem: str = ""
    error: str = ""


async def destroy_instance(provider: Provider, state: StateStore, instance_id: str, *, why: str,
                           what: str | None = None, label: str | None = None,
                           clock: Callable[[], float] = time.time, at: float | None = None,
                           problems: Problems | None = None,
                           announce: Callable[[], Awaitable[None]] | None = None,
                           level: int = logging.WARNING) -> Destroyed:
    """Destroy ``instance_id`` at ``provider`` and record it in ``state`` (the module docstring).

    ``why`` says the reason (in the log line and any problem); ``what`` names the instance for a
    reader ("session instance 7", default "instance 7"); ``at`` is the time recorded (default
    ``clock()``, read once the provider confirmed)."""
    iid = str(instance_id)
    what = what or f"instance {iid}"
    try:
        existed = await provider.destroy(iid)
    except LoraCloudError as exc:
        if problems is None:
            raise
        message = f"could not destroy {what} ({why}): {exc.message}"
        problems.add(kinds.DESTROY, iid, message)
        return Destroyed(iid, gone=False, problem=message, error=exc.message)
    log.log(level, "destroyed %s (label %r): %s", what, label or "", why)
    try:
        await asyncio.to_thread(state.mark_instance_destroyed, provider.name, iid, clock() if at is None else at)
    except CorruptRecord as exc:  # it is gone all the same: what bills is the provider's word
        if problems is None:
            raise
        problems.add_corrupt(exc, state.path)
        return Destroyed(iid, gone=True, existed=bool(existed), problem=exc.message, error=exc.message)
    if announce is not None:
        await announce()
    return Destroyed(iid, gone=True, existed=bool(existed))
