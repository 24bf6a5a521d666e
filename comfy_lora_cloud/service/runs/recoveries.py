"""The App's recovery noun (:class:`Recoveries`): builds the guard's round of recovery
(:class:`~.recovery.Recovery`) and reads a run's attempt history (:func:`~.attempts.history`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable

from ...errors import CorruptRecord, StorageError
from ...providers.base import Provider
from ...storage.base import Storage
from ...training.status import read_events, read_status
from ..money import CostLedger
from .attempts import RunHistory, history
from .recovery import DescribeRun, Recovery

if TYPE_CHECKING:
    from ..core import Core
    from ..money import Instances


class Recoveries:
    """The App's recovery noun: the guard's recovery round and the attempt history of a run."""

    def __init__(self, core: Core, instances: Instances, describe_run: DescribeRun):
        self.core = core
        self.instances = instances
        self.describe_run = describe_run  # the run as its event carries it (Runs.get)

    def guard(self, provider: Provider, storage: Storage, *,
              on_step: Callable[[str], None] | None = None) -> Recovery:
        return Recovery(self.core, self.instances, self.describe_run, provider, storage, on_step=on_step)

    async def history(self, run_id: str) -> RunHistory:
        """Each attempt (instance, GPU, $/hr, steps, cost), the time lost to preemptions and the
        total, for ``train status`` and the run card."""
        from ...models import validate_name

        validate_name(run_id, "run id")
        return await asyncio.to_thread(self.read, run_id)

    def read(self, run_id: str) -> RunHistory:
        """:meth:`history`, blocking (for a caller already in a thread); an unreadable bucket
        gives an empty history rather than an error."""
        storage = self.core.storage
        try:
            events = read_events(storage, run_id)
        except StorageError:
            events = []
        try:
            status = read_status(storage, run_id)
        except (StorageError, CorruptRecord):
            status = None
        costs: dict[str, float] | None = None
        instances: list[str] = []
        try:
            rows = [r for r in self.core.state.list_instances(include_destroyed=True) if r["run_id"] == run_id]
            instances = [r["id"] for r in sorted(rows, key=lambda r: r["created_at"])]
            lines = CostLedger(self.core.state, self.core.clock).lines(run_id=run_id)
            if lines or rows:
                costs = {iid: 0.0 for iid in instances}
                for c in lines:
                    costs[c.instance_id] = costs.get(c.instance_id, 0.0) + c.usd
        except CorruptRecord:
            pass
        return history(events, status, costs=costs, instances=instances, now=self.core.clock())
