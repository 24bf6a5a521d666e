"""The instances LoRA Cloud rented: list them with what they cost, stop, destroy, read logs.

Every edge (the CLI, the sidebar's button) destroys an instance here: an id that is unknown or not
ours is refused with :class:`ObjectNotFound` (HTTP 404, CLI exit 3); the destroy itself, confirmed
by reading the instance back, is :func:`~.destroy.destroy_instance`'s, as for every other path.
Ours: recorded in the state store, or listed by vast.ai with our ``lora-cloud:`` label; an
instance of the account without it is never touched.
The live cost shown per instance is the ledger's (:meth:`CostLedger.live_usd`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import AsyncIterator, Iterator, TYPE_CHECKING

from ...errors import ConfigError, ObjectNotFound, ProviderAPIError, redact
from ...models import Instance, validate_name
from ...providers.base import LABEL_PREFIX, Capability, Provider
from .costs import CostLedger
from .destroy import destroy_instance
from .views import BILLING_STATES, DestroyedInstance, InstanceLogs, InstanceView, StoppedInstance
from ..events import INSTANCE_EVENT

if TYPE_CHECKING:
    from ..core import Core


@contextlib.contextmanager
def _gone_is_not_found(provider: Provider, instance_id: str, doing: str) -> Iterator[None]:
    """An instance recorded here that the provider no longer has answers 404 (ObjectNotFound),
    not 502: the provider answered, and what it said is "no such instance". Nothing is recorded
    here on the strength of that one answer: reconciling the store is the guard's work."""
    try:
        yield
    except ProviderAPIError as exc:
        if exc.status != 404:
            raise
        raise ObjectNotFound(f"instance {instance_id} no longer exists at {provider.name}: nothing to {doing}") \
            from None


class Instances:
    def __init__(self, core: Core):
        self.core = core

    async def list(self, include_destroyed: bool = False) -> list[InstanceView]:
        """Instances this controller created, with uptime and money spent so far."""
        return await asyncio.to_thread(self._list, include_destroyed)

    def _list(self, include_destroyed: bool) -> list[InstanceView]:
        now = self.core.clock()
        ledger = CostLedger(self.core.state, self.core.clock)
        out = []
        for row in self.core.state.list_instances(include_destroyed=include_destroyed):
            try:
                data = json.loads(row.get("data") or "{}")
            except ValueError:
                data = {}
            data = data if isinstance(data, dict) else {}
            started = data.get("started_at") or row["created_at"]
            end = row.get("destroyed_at") or now
            if row["state"] in BILLING_STATES or row["state"] in ("stopped", "exited"):
                spent = ledger.live_usd(row["id"], row["state"], row["dph_total"], row["storage_dph"], started, now)
            else:  # destroyed, offline or unknown: only what was booked
                spent = ledger.instance_usd(row["id"])
            out.append(InstanceView(
                id=row["id"], provider=row["provider"], label=row["label"], run_id=row["run_id"],
                state=row["state"], gpu_name=row["gpu_name"], num_gpus=data.get("num_gpus", 1),
                dph_total=row["dph_total"], interruptible=bool(data.get("interruptible", False)),
                status_msg=str(data.get("status_msg", "")), created_at=row["created_at"],
                uptime_seconds=max(0.0, end - started), cost_usd=round(spent, 4),
            ))
        return out

    async def on_provider(self, everything: bool = False) -> list[Instance]:
        """What vast.ai lists now: our labelled instances (or every instance of the account)."""
        async with self.core.provider("vast")() as provider:
            return await provider.list("" if everything else LABEL_PREFIX)

    @contextlib.asynccontextmanager
    async def _ours(self, instance_id: str, needs: Capability | None = None) -> AsyncIterator[tuple[Provider, str | None]]:
        """The provider holding one of *our* instances, and the instance's run; anything else is
        refused. Ours: recorded in this controller's store, or listed by vast.ai with our
        ``lora-cloud:`` label (launched from another machine of the same user, or an orphan)."""
        validate_name(instance_id, "instance id")
        rows = await asyncio.to_thread(self.core.state.list_instances)
        row = next((r for r in rows if r["id"] == instance_id), None)
        async with self.core.provider(row["provider"] if row is not None else "vast")() as provider:
            run_id = row["run_id"] if row is not None else None
            if row is None:
                found = next((i for i in await provider.list(LABEL_PREFIX) if str(i.id) == instance_id), None)
                if found is None:
                    raise ObjectNotFound(f"no live instance {instance_id!r} launched by LoRA Cloud "
                                         f"(unknown, or not labelled {LABEL_PREFIX})")
                run_id = found.run_id
            if needs is not None and needs not in provider.capabilities:
                raise ConfigError(f"{provider.name} instances cannot {needs.value}")
            yield provider, run_id

    async def stop(self, instance_id: str) -> StoppedInstance:
        """Stop (keep the disk; storage still bills). Every open sidebar hears about it."""
        async with self._ours(instance_id, Capability.STOP) as (provider, run_id):
            with _gone_is_not_found(provider, instance_id, "stop"):
                await provider.stop(instance_id)
            inst = await provider.get(instance_id)
        if inst is not None:
            await asyncio.to_thread(self.core.state.put_instance, inst, run_id)
        await self.announce()
        return StoppedInstance(instance_id, inst.state.value if inst else "destroyed")

    async def destroy(self, instance_id: str) -> DestroyedInstance:
        """Destroy (billing ends; the disk is gone, the bucket keeps checkpoints and LoRAs)."""
        async with self._ours(instance_id) as (provider, _run_id):
            done = await destroy_instance(provider, self.core.state, instance_id, why="destroyed on the user's word",
                                          clock=self.core.clock, level=logging.INFO)
        await self.announce()
        return DestroyedInstance(instance_id, done.existed)

    async def destroy_all_of_run(self, provider: Provider, run_id: str, label: str, *,
                                 why: str = "the run was stopped by the user") -> list[str]:
        """Destroy every instance of a run: those the store records and those the provider lists
        with the run's label (a second one from a lost create answer included)."""
        rows = await asyncio.to_thread(self.core.state.list_instances)
        ids = [r["id"] for r in rows if r["run_id"] == run_id and r["provider"] == provider.name]
        return await self.destroy_labelled(provider, label, ids, why=why)

    async def destroy_labelled(self, provider: Provider, label: str, known: list[str] | tuple[str, ...] = (), *,
                               why: str = "its run or session ended") -> list[str]:
        """Destroy the instances ``known`` and every instance the provider lists with ``label``
        (through :func:`~.destroy.destroy_instance`; an error is raised to the caller)."""
        ids = [str(i) for i in known]
        ids += [str(i.id) for i in await provider.list(label) if i.label == label and str(i.id) not in ids]
        for iid in ids:
            await destroy_instance(provider, self.core.state, iid, why=why, label=label, clock=self.core.clock,
                                   level=logging.INFO)
        return ids

    async def logs(self, instance_id: str, tail: int = 200) -> InstanceLogs:
        if not 1 <= tail <= 5000:
            raise ConfigError("tail must be between 1 and 5000")
        async with self._ours(instance_id, Capability.LOGS) as (provider, _run_id):
            with _gone_is_not_found(provider, instance_id, "read logs of"):
                text = await provider.logs(instance_id, tail)
        return InstanceLogs(instance_id, redact(text))

    async def announce(self) -> None:
        """Every open sidebar hears the instances as they are now (the event carries their JSON)."""
        self.core.emit(INSTANCE_EVENT, {"instances": [view.to_dict() for view in await self.list()]})
