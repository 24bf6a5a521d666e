"""Starting a run: the one path from a :class:`~.request.TrainRequest` to a rented GPU running
the trainer, idempotent per dataset + config.

:func:`start_run` checks the dataset, settles a stale launch of the same config
(:func:`_settle_stale`), chooses the offer (:func:`_choose_offer`) and launches through
:func:`~.launch.launch_run` (intent -> labelled create -> record). The edges call
:meth:`~.control.Runs.start`, which emits the run's event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, AsyncContextManager, Callable

from ...errors import BudgetExceeded, ConfigError, StorageError, TrainingError
from ...models import InstanceState, Run, RunState
from ...providers import pricing
from ...providers.base import OfferRequest, Provider
from ...settings import Settings
from ...storage import Storage
from ...training.estimate import interruptible_overrides, resolve_gpu
from ...training.launch import config_hash, launch_spec, new_run_id, trainer_env
from ...training.presets import load_preset, pick_tier, plan_steps
from ...training.spec import RunLimits, RunSpec
from ...training.status import read_status
from ..home import StateStore
from ..library import Transfers, require_trainable
from ..money import Budgets
from ..money import launch_bucket_id
from .attempts import Policy, announce_attempt
from .launch import UNFINISHED, launch_run, launcher, settle_unfinished_launch
from .lifecycle import end_run
from .preflight import require_ready
from .request import TrainRequest

log = logging.getLogger(__name__)

ProviderFactory = Callable[[], AsyncContextManager[Provider]]
OpenProvider = Callable[..., ProviderFactory]  # (name, vram_gb=...) -> factory: App.provider
INTERRUPTED = "the launch was interrupted (Ctrl-C or cancel) before it finished; nothing is left billing"


@dataclass(frozen=True)
class StartResult:
    run_id: str
    attached: bool  # True: an existing run with the same dataset + config was found
    state: str
    lora_name: str
    instance_id: str | None = None
    gpu: str = ""
    dph: float = 0.0
    expected_usd: float | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the dataset checks' (service/runs/preflight.py)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def start_run(
    req: TrainRequest, *, settings: Settings, storage: Storage, state: StateStore, open_provider: OpenProvider,
    python: str | None = None, clock: Callable[[], float] = time.time, transfers: Transfers | None = None,
) -> StartResult:
    """Rent a GPU and start the trainer, unless the same dataset + config already has a run.

    The engine behind :meth:`Runs.start`; edges call that, not this."""
    req.checked()
    recovery = Policy.overrides(wait_minutes=req.resume_wait_minutes, max_attempts=req.max_attempts,
                                on_demand_after=req.on_demand_after)
    info = await asyncio.to_thread(require_trainable, storage, req.dataset)  # complete, with images
    gpu_name, gpu_vram = resolve_gpu(req.gpu) if req.gpu else (None, None)
    tier = float(pick_tier(req.vram_gb or gpu_vram or 24))
    overrides = dict(req.overrides)
    if req.interruptible:  # short epochs: a preemption loses at most one (settings.preempt_checkpoint_minutes)
        overrides = {**interruptible_overrides(req.lora_type, int(tier), req.overrides, info.images,
                                               minutes=settings.preempt_checkpoint_minutes, gpu_name=gpu_name),
                     **overrides}
    spec = RunSpec(run_id="pending", dataset=req.dataset, lora_type=req.lora_type,
                   lora_name=req.lora_name or req.dataset,
                   trigger=req.trigger if req.trigger is not None else (info.trigger or ""), vram_gb=tier,
                   overrides=overrides, max_hours=req.max_hours or settings.max_run_hours)
    preset = load_preset(req.lora_type, tier, overrides)  # bad overrides fail before renting
    steps = plan_steps(preset, info.images)
    digest = await asyncio.to_thread(config_hash, spec, storage)
    existing = await asyncio.to_thread(state.find_run_by_hash, digest)
    if existing is not None and not existing.state.is_terminal:
        existing = await _settle_stale(existing, storage=storage, state=state, open_provider=open_provider,
                                       clock=clock)
    if existing is None or not _reusable(existing, req):
        # what the instance needs is checked before anything is recorded: a missing key or a
        # local bucket is a clear error and leaves no failed run behind (nor a bucket id)
        trainer_env(spec, settings, storage, remote=req.provider != "local")
        # checks before money: a dataset that would fail on the GPU is refused here, with the reasons
        ready = await asyncio.to_thread(require_ready, storage, req.dataset, lora_type=req.lora_type,
                                        trigger=spec.trigger, transfers=transfers)
        warnings = ready.warnings
        # the run's id (so its label) says which bucket it lives in: only homes that read it judge it
        bucket_id = await asyncio.to_thread(launch_bucket_id, storage, state)
        spec.run_id = new_run_id(spec.lora_name, clock, bucket_id=bucket_id)
        env = trainer_env(spec, settings, storage, remote=req.provider != "local")
        run = Run(id=spec.run_id, dataset=req.dataset, preset=req.lora_type, lora_name=spec.lora_name,
                  config_hash=digest, provider=req.provider, state=RunState.PENDING,
                  spec={**spec.to_dict(), "launcher": launcher()})
        existing, created = await asyncio.to_thread(state.claim_run, run, reuse_finished=req.reuse_finished)
    else:
        created, warnings = False, []
    if not created and existing.state in UNFINISHED and not existing.instance_id:
        # the same launch started a moment ago elsewhere: attach once it has an instance
        existing = await _settle_stale(existing, storage=storage, state=state, open_provider=open_provider,
                                       clock=clock)
        if existing.state.is_terminal:
            raise TrainingError(f"the same launch, started at the same moment as run {existing.id}, ended "
                                f"{existing.state.value}: {existing.error or 'no reason given'}; start it again")
    if not created:
        return StartResult(existing.id, True, existing.state.value, existing.lora_name, existing.instance_id,
                           existing.gpu, existing.dph, plan=steps.to_dict())
    try:
        budgets = Budgets.from_settings(settings)
        max_run_usd = req.max_run_usd if req.max_run_usd is not None else settings.max_run_usd
        max_dph = req.max_dph if req.max_dph is not None else settings.max_dph
        async with open_provider(req.provider, vram_gb=tier)() as provider:
            offer, expected, job = await _choose_offer(provider, req, preset, steps, tier, gpu_name, max_dph,
                                                       checkpoint_s=60.0 * settings.preempt_checkpoint_minutes)
            if expected is not None and max_run_usd and expected > max_run_usd:  # 0: no per-run limit
                raise BudgetExceeded(f"the cheapest fitting offer is expected to cost ${expected:.2f}, over the "
                                     f"${max_run_usd:.2f} per-run budget (max_run_usd)")
            # what the guard's recovery needs to rent the rest of the run again
            run.spec = {**run.spec, "job": job, "gpu_name": gpu_name, "max_run_usd": req.max_run_usd,
                        "recovery": recovery, "attempt": 1}
            # recorded with the run: a home that did not launch it holds it to these, not its own
            spec.limits = RunLimits(max_dph, max_run_usd, spec.max_hours).to_dict()
            await asyncio.to_thread(spec.save, storage)
            await asyncio.to_thread(announce_attempt, storage, spec.run_id, 1, offer, req.interruptible, fresh=True)
            py = python or (sys.executable if req.provider == "local" else "python")
            inst = await launch_run(provider, state, run, offer,
                                    launch_spec(spec, settings, env, python=py, interruptible=req.interruptible),
                                    budgets=budgets if req.provider != "local" else None,
                                    expected_usd=expected, clock=clock, storage=storage)
    except BaseException as exc:
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
            message = INTERRUPTED
        else:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # the launch's own error is the one to raise
            ended = await asyncio.to_thread(end_run, state, storage, run.id, RunState.FAILED, message)
            if ended.problem:
                log.warning("could not mark run %s failed in the bucket (written again by the guard): %s", run.id,
                            ended.problem)
        raise
    return StartResult(run.id, False, RunState.STARTING.value, spec.lora_name, str(inst.id), offer.gpu_name,
                       offer.dph_total, None if expected is None else round(expected, 2), steps.to_dict(),
                       warnings=warnings)


async def _settle_stale(run: Run, *, storage: Storage, state: StateStore, open_provider: OpenProvider,
                        clock: Callable[[], float]) -> Run:
    """A live record whose run has in fact ended must not block a new start: a launch that died
    before its create call (:func:`~.launch.settle_unfinished_launch`: never attached to with no
    instance), the bucket's terminal state when the trainer reported one, and a local run whose
    process is gone."""
    if run.state in UNFINISHED and not run.instance_id:
        async with open_provider(run.provider)() as provider:
            run = await settle_unfinished_launch(run, state=state, storage=storage, provider=provider, clock=clock)
        if run.state.is_terminal:
            return run
    try:
        reported = await asyncio.to_thread(read_status, storage, run.id)
    except StorageError:
        reported = None
    if reported is not None and reported.state.is_terminal:  # the store follows the bucket's end
        await asyncio.to_thread(end_run, state, storage, run.id, reported.state,
                                reported.error or run.error or reported.message)
        return await asyncio.to_thread(state.get_run, run.id) or run
    if run.provider == "local":
        async with open_provider("local")() as provider:
            inst = await provider.get(run.instance_id) if run.instance_id else None
        alive = inst is not None and inst.state is InstanceState.RUNNING
        launching = run.state in (RunState.PENDING, RunState.LAUNCHING) and clock() - run.updated_at < 120
        if not alive and not launching:
            await asyncio.to_thread(end_run, state, storage, run.id, RunState.FAILED,
                                    "the local trainer process ended without reporting an end")
            return await asyncio.to_thread(state.get_run, run.id) or run
    return run


def _reusable(run: Run, req: TrainRequest) -> bool:
    return not run.state.is_terminal or (req.reuse_finished and run.state is RunState.DONE)


async def _choose_offer(provider: Provider, req: TrainRequest, preset, steps, tier: float, gpu_name: str | None,
                        max_dph: float, checkpoint_s: float = 600.0):
    """(offer, expected $ or None, the pricing job as a dict for the recovery to price the rest)."""
    job = pricing.Job(preset=req.lora_type, steps=steps.total_steps * steps.batch_size, tier=int(tier),
                      max_dph=max_dph, interruptible=req.interruptible,
                      resolution=int(preset.dataset.get("resolution", 1024)), checkpoint_s=checkpoint_s)
    if req.provider == "local":
        offers = await provider.search(OfferRequest(min_vram_gb=pricing.TIER_VRAM_GB[int(tier)]))
        if not offers:
            raise ConfigError(f"this machine's GPU is below the {int(tier)} GB tier")
        return offers[0], None, dataclasses.asdict(job)
    if gpu_name:
        offers = await provider.search(OfferRequest(**{**job.request().to_dict(), "gpu_names": [gpu_name]}))
        pick = pricing.rank_offers(offers, job)
    else:
        pick = await pricing.pick_offer(provider, job)
    return pick.best.offer, pick.best.expected_cost, dataclasses.asdict(job)
