"""Training runs from a controller's side: start (idempotent), follow, fetch the LoRA, stop.

The CLI (`lora-cloud train ...`), the ComfyUI nodes (Launch / Await LoRA) and the routes all go
through here, so a run started in one is found by the others. The order that keeps money safe
lives in :func:`~.launch.launch_run` (intent -> labelled create -> record); the bucket's
``runs/<id>/status.json`` is what every reader follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncContextManager, Awaitable, Callable

from ..errors import BudgetExceeded, ConfigError, ObjectNotFound, TrainingError
from ..models import Run, RunState, RunStatus
from ..providers import pricing
from ..providers.base import OfferRequest, Provider
from ..settings import Settings
from ..storage import Storage
from ..storage.layout import lora_key
from ..training.estimate import resolve_gpu
from ..training.launch import config_hash, launch_spec, new_run_id, trainer_env
from ..training.presets import load_preset, pick_tier, plan_steps
from ..training.spec import RunSpec
from ..training.status import StatusReporter, read_status
from .budgets import Budgets
from .launch import launch_run
from .library import download_lora, require_trainable
from .state import StateStore

log = logging.getLogger(__name__)

ProviderFactory = Callable[[], AsyncContextManager[Provider]]


def provider_factory(name: str, settings: Settings, vram_gb: float = 24.0) -> ProviderFactory:
    """An async context manager factory that opens the named provider (``vast`` or ``local``)."""
    if name == "vast":

        @contextlib.asynccontextmanager
        async def open_vast():
            from ..providers.vast import client_from_settings, VastProvider

            async with client_from_settings(settings) as client:
                yield VastProvider(client)

        return open_vast
    if name == "local":

        @contextlib.asynccontextmanager
        async def open_local():
            from ..providers.local import LocalProvider

            yield LocalProvider(settings.home / "local-instances", vram_gb=vram_gb)

        return open_local
    raise ConfigError(f"unknown provider {name!r}; choose vast or local")


@dataclass
class TrainRequest:
    """What a user asks for. Everything else (steps, tier, offer) is derived."""

    dataset: str
    lora_type: str = "character"
    lora_name: str | None = None  # default: the dataset name
    trigger: str | None = None  # default: the dataset's
    gpu: str | None = None  # a GPU model (4090, a100...) or None for the offer picker
    vram_gb: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    provider: str = "vast"
    interruptible: bool = False
    max_run_usd: float | None = None  # default: the settings' budget
    max_dph: float | None = None
    max_hours: float | None = None
    reuse_finished: bool = False  # a DONE run with the same config counts (ComfyUI re-queues)


@dataclass
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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def start_run(
    req: TrainRequest, *, settings: Settings, storage: Storage, state: StateStore,
    open_provider: ProviderFactory | None = None, python: str | None = None,
    clock: Callable[[], float] = time.time,
) -> StartResult:
    """Rent a GPU and start the trainer, unless the same dataset + config already has a run."""
    info = await asyncio.to_thread(require_trainable, storage, req.dataset)  # complete, with images
    gpu_name, gpu_vram = resolve_gpu(req.gpu) if req.gpu else (None, None)
    tier = float(pick_tier(req.vram_gb or gpu_vram or 24))
    spec = RunSpec(run_id="pending", dataset=req.dataset, lora_type=req.lora_type,
                   lora_name=req.lora_name or req.dataset,
                   trigger=req.trigger if req.trigger is not None else (info.trigger or ""), vram_gb=tier,
                   overrides=req.overrides, max_hours=req.max_hours or settings.max_run_hours)
    preset = load_preset(req.lora_type, tier, req.overrides)  # bad overrides fail before renting
    steps = plan_steps(preset, info.images)
    digest = await asyncio.to_thread(config_hash, spec, storage)
    spec.run_id = new_run_id(spec.lora_name, clock)
    run = Run(id=spec.run_id, dataset=req.dataset, preset=req.lora_type, lora_name=spec.lora_name,
              config_hash=digest, provider=req.provider, state=RunState.PENDING, spec=spec.to_dict())
    existing = await asyncio.to_thread(state.find_run_by_hash, digest)
    if existing is None or not _reusable(existing, req):
        # what the instance needs is checked before anything is recorded: a missing key or a
        # local bucket is a clear error and leaves no failed run behind
        env = trainer_env(spec, settings, storage, remote=req.provider != "local")
        existing, created = await asyncio.to_thread(state.claim_run, run, reuse_finished=req.reuse_finished)
    else:
        created = False
    if not created:
        return StartResult(existing.id, True, existing.state.value, existing.lora_name, existing.instance_id,
                           existing.gpu, existing.dph, plan=steps.to_dict())
    try:
        budgets = Budgets.from_settings(settings)
        max_run_usd = req.max_run_usd if req.max_run_usd is not None else settings.max_run_usd
        max_dph = req.max_dph if req.max_dph is not None else settings.max_dph
        opener = open_provider or provider_factory(req.provider, settings, tier)
        async with opener() as provider:
            offer, expected = await _choose_offer(provider, req, preset, steps, tier, gpu_name, max_dph)
            if expected is not None and expected > max_run_usd:
                raise BudgetExceeded(f"the cheapest fitting offer is expected to cost ${expected:.2f}, over the "
                                     f"${max_run_usd:.2f} per-run budget (max_run_usd)")
            await asyncio.to_thread(spec.save, storage)
            await asyncio.to_thread(StatusReporter(storage, spec.run_id).update, state=RunState.LAUNCHING,
                                    message=f"renting {offer.gpu_name}")
            py = python or (sys.executable if req.provider == "local" else "python")
            inst = await launch_run(provider, state, run, offer,
                                    launch_spec(spec, settings, env, python=py, interruptible=req.interruptible),
                                    budgets=budgets if req.provider != "local" else None,
                                    expected_usd=expected, clock=clock)
    except BaseException as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        current = await asyncio.to_thread(state.get_run, run.id)
        if current is not None and not current.state.is_terminal:
            await asyncio.to_thread(state.update_run, run.id, state=RunState.FAILED, error=message)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(StatusReporter(storage, run.id).update, state=RunState.FAILED, error=message,
                                    message=message)
        raise
    return StartResult(run.id, False, RunState.STARTING.value, spec.lora_name, str(inst.id), offer.gpu_name,
                       offer.dph_total, None if expected is None else round(expected, 2), steps.to_dict())


def _reusable(run: Run, req: TrainRequest) -> bool:
    return not run.state.is_terminal or (req.reuse_finished and run.state is RunState.DONE)


async def _choose_offer(provider: Provider, req: TrainRequest, preset, steps, tier: float, gpu_name: str | None,
                        max_dph: float):
    if req.provider == "local":
        offers = await provider.search(OfferRequest(min_vram_gb=pricing.TIER_VRAM_GB[int(tier)]))
        if not offers:
            raise ConfigError(f"this machine's GPU is below the {int(tier)} GB tier")
        return offers[0], None
    job = pricing.Job(preset=req.lora_type, steps=steps.total_steps * steps.batch_size, tier=int(tier),
                      max_dph=max_dph, interruptible=req.interruptible,
                      resolution=int(preset.dataset.get("resolution", 1024)))
    if gpu_name:
        offers = await provider.search(OfferRequest(**{**job.request().to_dict(), "gpu_names": [gpu_name]}))
        pick = pricing.rank_offers(offers, job)
    else:
        pick = await pricing.pick_offer(provider, job)
    return pick.best.offer, pick.best.expected_cost


async def wait_for_run(
    storage: Storage, run_id: str, *, poll_s: float = 5.0,
    on_status: Callable[[RunStatus], Awaitable[None] | None] | None = None,
    should_stop: Callable[[], bool] | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RunStatus:
    """Follow ``runs/<id>/status.json`` until the run ends (or ``should_stop`` says so: the
    caller stops waiting, the paid run goes on). Returns the last status."""
    last: RunStatus | None = None
    while True:
        if should_stop is not None and should_stop():
            raise asyncio.CancelledError("stopped waiting")
        status = await asyncio.to_thread(read_status, storage, run_id)
        if status is not None:
            if on_status is not None and (last is None or status.updated_at != last.updated_at
                                          or status.state != last.state):
                result = on_status(status)
                if asyncio.iscoroutine(result):
                    await result
            last = status
            if status.state.is_terminal:
                return status
        await sleep(poll_s)


def fetch_lora(storage: Storage, status: RunStatus, dest_dir: str | Path) -> Path:
    """Download a finished run's LoRA into ``dest_dir`` (through :func:`.library.download_lora`,
    the one LoRA download: checksum verified, never a half file under the LoRA's name)."""
    if status.state is not RunState.DONE or not status.lora:
        raise TrainingError(f"run {status.run_id} ended {status.state.value}: {status.error or status.message}")
    key = status.lora  # the trainer records the LoRA's key: loras/<name>.safetensors
    name = key.rsplit("/", 1)[-1].removesuffix(".safetensors")
    try:
        expected = lora_key(name)
    except ConfigError:
        expected = None
    if key != expected:
        raise TrainingError(f"run {status.run_id} names an unexpected LoRA location {key!r}")
    return download_lora(storage, name, dest_dir)


def run_status_or_404(storage: Storage, run_id: str) -> RunStatus:
    status = read_status(storage, run_id)
    if status is None:
        raise ObjectNotFound(f"run {run_id} has no status in {storage.url}")
    return status


def mark_stopped_in_bucket(storage: Storage, run_id: str) -> None:
    """Tell every reader of ``runs/<id>/status.json`` that the user stopped the run, unless its
    trainer reported an end first (a run that finished keeps its word)."""
    reporter = StatusReporter(storage, run_id)
    previous = reporter.resume_from_bucket()
    if previous is None or not previous.state.is_terminal:
        reporter.update(state=RunState.STOPPED, message="stopped by the user", eta_seconds=None)
