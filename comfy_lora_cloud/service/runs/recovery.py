"""Preemption recovery: the one home of "a run's instance was stopped under it".

Driven from the guard pass (:meth:`~.app.App.guard_pass`, so ComfyUI's loop, ``lora-cloud
instances reconcile`` and cron all recover runs), after reconcile and the budget watchdog (so the
ledger holds this round's spend), over the same listing. For each live run this controller launched on the provider:

1. **Notice.** Its recorded instance is ``stopped`` or ``exited`` while we want it running
   (vast.ai pauses an outbid interruptible instance: ``stopped`` with ``intended_status``
   running), or its trainer reported ``preempted`` (it got SIGTERM) and the instance is not
   running. The run becomes PREEMPTED in the store and in the bucket (an event ``preempted``
   with the step reached and the checkpoint it resumes from) and ``lora_cloud.preemption`` is
   emitted: within one round.
2. **Wait** up to the policy's wait for the same instance to resume (its disk holds the state; its
   trainer starts again and resumes from the checkpoint, reusing the local copy). Back: the run
   is STARTING again (event ``resumed``).
3. **Move.** Else (also at once when the instance exited, or vanished): the cheapest fitting
   offer is picked again (interruptible, or on-demand from the K-th preemption when the policy
   says so), the old instance is destroyed (confirmed), and the run is launched through
   :func:`~.launch.launch_run`, the path of a first start (intent -> labelled create -> record),
   keeping its id and label. The new trainer resumes from the bucket's last checkpoint.
4. **Stop for good** when the run has used its max attempts (instances, plus launches that
   failed) or when what every attempt cost so far plus the expected cost of the rest passes the
   run's budget: the instance is destroyed and the run FAILS, saying why.

Money: every attempt's instance carries the run's label, so the ledger books each attempt to the
run and the watchdog enforces ``max_run_usd`` over all of them. A stopped instance bills storage
while it is waited for, and is destroyed before its successor is rented: a run never has two.

A controller that dies mid-recovery is reconciled like any launch: after the old instance was
destroyed, the run is PREEMPTED with no live instance (the next round launches); after the
intent, reconcile turns a relaunch still LAUNCHING without an instance after the grace period
back into PREEMPTED (a first launch would FAIL); after the create, reconcile adopts the labelled
instance into the run.

The policy comes from the settings (``preempt_wait_minutes``, ``preempt_max_attempts``,
``preempt_on_demand_after``), each overridable per run (``Run.spec["recovery"]``, set by ``train
start``). The attempt history (:func:`~.attempts.history`) is read from the bucket's events, so every
controller can show it, with each attempt's cost from this controller's ledger. The policy, the
bucket's attempt records and that history live in :mod:`.attempts`; the App's noun that builds
this round is :class:`~.recoveries.Recoveries`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ...errors import BudgetExceeded, ConfigError, CorruptRecord, LoraCloudError, OfferUnavailable, StorageError
from ...models import Instance, InstanceState, Offer, Run, RunState, RunStatus
from ...providers import pricing
from ...providers.base import OfferRequest, Provider
from ...storage.base import Storage
from ...training.launch import launch_spec, trainer_env
from ...training.spec import RunSpec
from ...training.status import read_events, read_status
from ..money import kinds
from ..money import Budgets, run_limit
from ..money import CostLedger
from ..events import PREEMPTION_EVENT, RUN_EVENT
from .attempts import Policy, announce_attempt, mark_preempted_in_bucket
from ..money import destroy_instance
from .launch import launch_run
from .lifecycle import end_run
from ..money import Problems

if TYPE_CHECKING:
    from ..core import Core
    from ..money import Instances
    from .views import RunView

log = logging.getLogger(__name__)

# the run as its event carries it (Runs.get): recovery announces each move with it
DescribeRun = Callable[[str], Awaitable["RunView"]]

_KV = "recovery:"  # kv key prefix -> this controller's memory of one run's preemptions (JSON)
STOPPED_STATES = (InstanceState.STOPPED, InstanceState.EXITED)
BACK_STATES = (InstanceState.RUNNING, InstanceState.LOADING)
STEPS = ("destroyed", "intent_recorded", "created", "recorded")  # on_step names, in order


@dataclass
class RecoveryReport:
    preempted: list[str] = field(default_factory=list)  # runs noticed preempted this round
    waiting: list[str] = field(default_factory=list)  # waiting for their instance (or an offer)
    resumed: list[str] = field(default_factory=list)  # their instance came back
    relaunched: dict[str, str] = field(default_factory=dict)  # run id -> its new instance
    gave_up: list[str] = field(default_factory=list)  # failed for good (budget, max attempts)
    ended: list[str] = field(default_factory=list)  # came back and ended between two rounds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def is_preempted(inst: Instance) -> bool:
    """Stopped or exited while we want it running (vast.ai's outbid pause, a container that died)."""
    return inst.state in STOPPED_STATES and inst.intended_state == "running"


def _checkpoint_step(events: list[dict[str, Any]]) -> int:
    """The step of the newest checkpoint the trainers uploaded (0: none)."""
    steps = [e.get("step") for e in events if e.get("kind") in ("checkpoint", "resumed")]
    return max((s for s in steps if isinstance(s, int) and not isinstance(s, bool)), default=0)


# ---- one round -----------------------------------------------------------------------------------
class Recovery:
    """One guard round of recovery over one provider (built by :meth:`Recoveries.guard`)."""

    def __init__(self, core: Core, instances: Instances, describe_run: DescribeRun, provider: Provider,
                 storage: Storage, *, on_step: Callable[[str], None] | None = None):
        self.core = core
        self.instances = instances
        self.describe_run = describe_run
        self.provider = provider
        self.storage = storage
        self.state = core.state
        self.clock = core.clock
        self.on_step = on_step or (lambda name: None)

    async def run_once(self, instances: list[Instance], *, now: float | None = None,
                       problems: Problems | None = None) -> RecoveryReport:
        problems = problems if problems is not None else Problems()
        now = self.clock() if now is None else now
        report = RecoveryReport()
        try:
            runs = await asyncio.to_thread(self.state.list_runs, live_only=True, limit=100_000,
                                           on_corrupt=lambda exc: problems.add_corrupt(exc, self.state.path))
        except CorruptRecord as exc:  # reconcile reported it; without runs there is nothing to recover
            problems.add_corrupt(exc, self.state.path)
            return report
        listed = {str(i.id): i for i in instances}
        for run in runs:
            if run.provider != self.provider.name or run.state.is_launching:
                continue  # a launch (first or re-) in flight is reconcile's until it has an instance
            try:
                await self._one(run, listed, now, report, problems)
            except CorruptRecord as exc:
                problems.add_corrupt(exc, self.state.path)
            except Exception as exc:  # noqa: BLE001 - one run must never stop the others
                log.exception("recovery of run %s", run.id)
                problems.add(kinds.UNEXPECTED, run.id, f"recovery of run {run.id}: {type(exc).__name__}: {exc}")
        return report

    async def _one(self, run: Run, listed: dict[str, Instance], now: float, report: RecoveryReport,
                   problems: Problems) -> None:
        inst = listed.get(str(run.instance_id)) if run.instance_id else None
        policy = Policy.of(self.core.settings, run)
        if run.state is RunState.PREEMPTED:
            try:
                ended = await asyncio.to_thread(read_status, self.storage, run.id)
            except StorageError as exc:  # it may have finished: never move a run on that doubt
                problems.add(kinds.BUCKET, run.id, f"preempted run {run.id} is not moved while its status cannot "
                                                   f"be read: {exc.message}")
                return
            except CorruptRecord:
                ended = None
            # back only once running: "scheduling" (loading) may wait for a GPU someone else took, forever
            may_return = inst is not None and inst.state in (InstanceState.STOPPED, InstanceState.LOADING)
            if inst is not None and inst.state is InstanceState.RUNNING:
                await self._resumed(run, inst, now, report)
            elif ended is not None and ended.state.is_terminal:  # it came back and finished between two rounds
                done = await asyncio.to_thread(end_run, self.state, self.storage, run.id, ended.state,
                                               ended.error or ended.message)  # the store follows the bucket
                if not done.problem:
                    report.ended.append(run.id)
            elif may_return and now - await asyncio.to_thread(self._preempted_at, run.id, now) < policy.wait_s:
                report.waiting.append(run.id)
            else:
                await self._move(run, inst, policy, now, report, problems)
            return
        if inst is None or inst.state in BACK_STATES:
            return  # not listed (reconcile confirms it gone and settles the run), or running
        try:
            status = await asyncio.to_thread(read_status, self.storage, run.id)
        except StorageError as exc:
            if is_preempted(inst):
                problems.add(kinds.BUCKET, run.id, f"run {run.id} looks preempted but its status cannot be read: "
                                                   f"{exc.message}")
            return
        except CorruptRecord:
            status = None
        if status is not None and status.state.is_terminal:
            return  # its trainer finished: reconcile destroys the instance
        said_so = status is not None and status.state is RunState.PREEMPTED
        if not (is_preempted(inst) or said_so):
            return
        if not await self._mark_preempted(run, inst, status, now, problems):
            return
        report.preempted.append(run.id)
        if policy.wait_s <= 0 or inst.state is not InstanceState.STOPPED:  # an exited container does not resume
            await self._move(run, inst, policy, now, report, problems)
        else:
            report.waiting.append(run.id)

    # ---- memory (this controller's; the bucket has the events) --------------------------------
    def _memory(self, run_id: str) -> dict[str, Any]:
        raw = self.state.get_kv(_KV + run_id)
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    def _preempted_at(self, run_id: str, now: float) -> float:
        """When this controller noticed the preemption (remembered now if it was not)."""
        at = self._memory(run_id).get("preempted_at")
        if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at):
            return float(at)
        self._remember(run_id, preempted_at=now)
        return now

    def _remember(self, run_id: str, **fields: Any) -> dict[str, Any]:
        data = {**self._memory(run_id), **fields}
        self.state.set_kv(_KV + run_id, json.dumps(data))
        return data

    # ---- notice / resume ---------------------------------------------------------------------
    async def _mark_preempted(self, run: Run, inst: Instance, status: RunStatus | None, now: float,
                              problems: Problems) -> bool:
        iid = str(inst.id)
        reason = inst.status_msg or f"instance {inst.state.value} while it should run"
        events = await asyncio.to_thread(read_events, self.storage, run.id)
        checkpoint = _checkpoint_step(events)
        step = status.step if status is not None else 0
        message = f"preempted: instance {iid} {inst.state.value} ({reason[:120]}); resumes from step {checkpoint}"
        try:
            await asyncio.to_thread(mark_preempted_in_bucket, self.storage, run.id, message, instance=iid,
                                    step=step, checkpoint_step=checkpoint, reason=reason[:200])
        except StorageError as exc:
            problems.add(kinds.BUCKET, run.id, f"could not mark run {run.id} preempted in the bucket: {exc.message}")
            return False
        await asyncio.to_thread(self.state.update_run, run.id, state=RunState.PREEMPTED)
        memory = self._memory(run.id)
        memory = await asyncio.to_thread(self._remember, run.id, preempted_at=now, instance=iid,
                                         preemptions=int(memory.get("preemptions", 0)) + 1)
        log.warning("run %s: %s", run.id, message)
        await self._announce(run.id, "preempted", instance_id=iid, message=message, step=step,
                             checkpoint_step=checkpoint, preemptions=memory["preemptions"])
        return True

    async def _resumed(self, run: Run, inst: Instance, now: float, report: RecoveryReport) -> None:
        memory = self._memory(run.id)
        waited = max(now - float(memory.get("preempted_at") or now), 0.0)
        await asyncio.to_thread(self.state.update_run, run.id, state=RunState.STARTING)
        await asyncio.to_thread(self._remember, run.id, preempted_at=None)
        report.resumed.append(run.id)
        await self._announce(run.id, "resumed", instance_id=str(inst.id), waited_s=round(waited, 1),
                             message=f"instance {inst.id} resumed after {waited / 60:.1f} min; the run goes on there")

    # ---- move ---------------------------------------------------------------------------------
    async def _move(self, run: Run, inst: Instance | None, policy: Policy, now: float, report: RecoveryReport,
                    problems: Problems) -> None:
        memory = self._memory(run.id)
        preemptions = int(memory.get("preemptions", 0))
        used = await asyncio.to_thread(self._attempts, run.id)
        attempts = used + int(memory.get("launch_failures", 0))
        if attempts >= policy.max_attempts:
            await self._give_up(run, inst, f"preempted {preemptions} time(s); the run used its {policy.max_attempts} "
                                           "attempt(s) (max attempts)", report, problems)
            return
        settings = self.core.settings
        job, gpu_name = self._job(run, settings, inst)
        events = await asyncio.to_thread(read_events, self.storage, run.id)
        status = await asyncio.to_thread(self._status, run.id)
        if status is not None and status.total_steps:
            left = 1.0 - min(_checkpoint_step(events) / status.total_steps, 1.0)
            job = dataclasses.replace(job, steps=max(1, round(job.steps * left)))
        if job.interruptible and policy.on_demand_after and preemptions >= policy.on_demand_after:
            job = dataclasses.replace(job, interruptible=False)
        try:
            spec = RunSpec.from_dict(run.spec)
            env = await asyncio.to_thread(trainer_env, spec, settings, self.storage, remote=True)
            offer, expected = await self._pick(job, gpu_name)
        except OfferUnavailable as exc:
            problems.add(kinds.RECOVERY, run.id, f"run {run.id} waits for an offer to move to: {exc.message}")
            report.waiting.append(run.id)
            return
        except ConfigError as exc:
            problems.add(kinds.RECOVERY, run.id, f"run {run.id} cannot be moved until this is fixed: {exc.message}")
            report.waiting.append(run.id)
            return
        ledger = CostLedger(self.state, self.clock)
        spent = await asyncio.to_thread(ledger.run_usd, run.id)
        budget = run_limit(run.spec, settings.max_run_usd)
        if budget and spent + expected > budget:
            await self._give_up(run, inst, f"preempted {preemptions} time(s); ${spent:.2f} spent and the rest is "
                                           f"expected to cost ${expected:.2f}, over the run's ${budget:.2f} budget "
                                           "(max_run_usd)", report, problems)
            return
        if not await self._retire(run, inst, problems):
            return
        self.on_step("destroyed")
        attempt = used + 1
        kind = "interruptible" if job.interruptible else "on-demand"
        await asyncio.to_thread(announce_attempt, self.storage, run.id, attempt, offer, job.interruptible, fresh=False,
                                message=f"attempt {attempt}: renting {offer.gpu_name} ({kind}) after a preemption")
        run.instance_id = None
        run.spec = {**run.spec, "attempt": attempt}
        try:
            new = await launch_run(self.provider, self.state, run, offer,
                                   launch_spec(spec, settings, env, python=self.core.python or "python",
                                               interruptible=job.interruptible),
                                   budgets=Budgets.from_settings(settings), clock=self.clock, on_step=self.on_step,
                                   ends_run=False)
        except BudgetExceeded as exc:  # max $/hr or the month's budget: no attempt can be rented
            await self._give_up(run, None, f"preempted {preemptions} time(s) and cannot be moved: {exc.message}",
                                report, problems)
            return
        except LoraCloudError as exc:  # launch_run cleaned up, the run is ours to requeue: tried again next round
            await asyncio.to_thread(self.state.update_run, run.id, state=RunState.PREEMPTED, instance_id=None,
                                    error=None)
            await asyncio.to_thread(self._remember, run.id, launch_failures=int(memory.get("launch_failures", 0)) + 1)
            problems.add(kinds.RECOVERY, run.id, f"run {run.id}: attempt {attempt} could not be launched "
                                                 f"(tried again next round): {exc.message}")
            return
        await asyncio.to_thread(self._remember, run.id, preempted_at=None, instance=str(new.id))
        report.relaunched[run.id] = str(new.id)
        await self._announce(run.id, "relaunched", instance_id=str(new.id), attempt=attempt, gpu=offer.gpu_name,
                             dph=round(offer.dph_total, 4), interruptible=job.interruptible,
                             expected_usd=round(expected, 3), spent_usd=round(spent, 3),
                             message=f"run moved to instance {new.id} ({offer.gpu_name}, ${offer.dph_total:.3f}/hr, "
                                     f"{kind}); it resumes from its last checkpoint")
        await self.instances.announce()

    def _attempts(self, run_id: str) -> int:
        rows = self.state.list_instances(include_destroyed=True)
        return sum(1 for r in rows if r["run_id"] == run_id and r["provider"] == self.provider.name)

    def _status(self, run_id: str) -> RunStatus | None:
        try:
            return read_status(self.storage, run_id)
        except (StorageError, CorruptRecord):
            return None

    def _job(self, run: Run, settings: Any, inst: Instance | None) -> tuple[pricing.Job, str | None]:
        """What to price for the rest of the run: the job ``train start`` stored, else (a run from
        an older version) one rebuilt from its preset."""
        stored = run.spec.get("job") if isinstance(run.spec.get("job"), dict) else None
        gpu_name = run.spec.get("gpu_name") if isinstance(run.spec.get("gpu_name"), str) else None
        if stored:
            names = {f.name for f in dataclasses.fields(pricing.Job)}
            try:
                return pricing.Job(**{k: v for k, v in stored.items() if k in names}), gpu_name
            except (TypeError, ConfigError):
                pass
        from ...training.estimate import preset_steps
        from ...training.presets import pick_tier

        tier = pick_tier(float(run.spec.get("vram_gb") or 24))
        return pricing.Job(preset=run.preset, tier=tier, steps=preset_steps(run.preset, tier=tier),
                           max_dph=settings.max_dph, interruptible=bool(inst is not None and inst.interruptible),
                           checkpoint_s=60.0 * settings.preempt_checkpoint_minutes), gpu_name

    async def _pick(self, job: pricing.Job, gpu_name: str | None) -> tuple[Offer, float]:
        if gpu_name:
            offers = await self.provider.search(OfferRequest(**{**job.request().to_dict(), "gpu_names": [gpu_name]}))
            pick = pricing.rank_offers(offers, job)
        else:
            pick = await pricing.pick_offer(self.provider, job)
        return pick.best.offer, pick.best.expected_cost

    async def _retire(self, run: Run, inst: Instance | None, problems: Problems) -> bool:
        """Destroy the run's old instance (confirmed); False when it could not be (next round)."""
        iid = str(inst.id) if inst is not None else run.instance_id
        if not iid:
            return True
        why = "the run is moved once it is gone"
        if inst is None:
            try:
                if await self.provider.get(iid) is not None:
                    return False  # not listed, but there: the next round sees it
            except LoraCloudError as exc:
                problems.add(kinds.DESTROY, iid, f"could not destroy preempted instance {iid} of run {run.id} "
                                                 f"({why}): {exc.message}")
                return False
            await asyncio.to_thread(self.state.mark_instance_destroyed, self.provider.name, iid, self.clock())
            return True
        done = await destroy_instance(self.provider, self.state, iid, why=why,
                                      what=f"preempted instance {iid} of run {run.id}", label=inst.label,
                                      clock=self.clock, problems=problems)
        return done.gone

    async def _give_up(self, run: Run, inst: Instance | None, message: str, report: RecoveryReport,
                       problems: Problems) -> None:
        """The run stops for good: its instance goes, the run FAILS here and in the bucket."""
        if inst is not None and not await self._retire(run, inst, problems):
            return
        ended = await asyncio.to_thread(end_run, self.state, self.storage, run.id, RunState.FAILED, message)
        if ended.problem:  # written again at the start of the next round, before anything judges the run
            problems.add(kinds.BUCKET, run.id, f"could not mark run {run.id} failed in the bucket: {ended.problem}")
            return
        report.gave_up.append(run.id)
        log.warning("run %s: %s", run.id, message)
        await self._announce(run.id, "gave_up", instance_id=str(inst.id) if inst else None, message=message)

    async def _announce(self, run_id: str, kind: str, **data: Any) -> None:
        self.core.emit(PREEMPTION_EVENT, {"kind": kind, "run_id": run_id, **data})
        try:
            self.core.emit(RUN_EVENT, (await self.describe_run(run_id)).to_dict())
        except LoraCloudError as exc:  # the sidebar catches up on its next refresh
            log.info("run %s not announced: %s", run_id, exc.message)
