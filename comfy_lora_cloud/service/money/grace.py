"""The unowned grace: how long an instance no live run or session owns is kept before it is
destroyed. Reconcile (runs) and the sessions' guard both hold instances to this one rule.

An instance may look unowned for a moment while a launch in another process sits between its
create call and its record; so the first round that finds it unowned only starts a timer, kept
in the state store (it outlives the process: a guard run from cron every few minutes counts the
same time), and it is destroyed once it has been unowned for ``grace_s``. A round that finds it
owned again clears the timer. A timer that cannot be read (not a finite number) starts again
from now, said in a ``corrupt_row`` problem: the wait gets longer, never shorter.
"""

from __future__ import annotations

import math

from ...errors import CorruptRecord
from ..home import StateStore
from . import problems as kinds
from .problems import Problems


class UnownedGrace:
    """The grace timers of one kind of instance, kept under ``prefix`` + instance id."""

    def __init__(self, state: StateStore, prefix: str, grace_s: float):
        self.state = state
        self.prefix = prefix
        self.grace_s = grace_s

    def waiting(self, instance_id: str, now: float, problems: Problems) -> bool:
        """Whether ``instance_id``, unowned now, is still inside its grace (blocking); its timer
        starts on the first call. A store that cannot be read raises :class:`CorruptRecord`."""
        return now - self._since(str(instance_id), now, problems) < self.grace_s

    def owned(self, instance_id: str) -> None:
        """``instance_id`` is owned: its timer, if any, is cleared (blocking)."""
        self.state.set_kv(self.prefix + str(instance_id), "")

    def _since(self, iid: str, now: float, problems: Problems) -> float:
        key = self.prefix + iid
        try:
            since = self.state.get_kv_float(key)
        except CorruptRecord as exc:
            if "key" not in exc.details:  # the store itself, not this value
                raise
            problems.add(kinds.CORRUPT_ROW, key, f"{exc.message}; the grace period starts again")
            since = None
        if since is None or not math.isfinite(since):
            self.state.set_kv(key, repr(now))
            return now
        return since
