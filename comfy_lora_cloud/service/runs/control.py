"""Training runs from a controller's side: start (idempotent), follow, fetch the LoRA, stop.

The CLI (`lora-cloud train ...`), the ComfyUI nodes (Launch / Await LoRA) and the routes all go
through here, so a run started in one is found by the others. The order that keeps money safe
lives in :func:`~.launch.launch_run` (intent -> labelled create -> record); the bucket's
``runs/<id>/status.json`` is what every reader follows.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import dataclasses
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncContextManager, Awaitable, Callable, TYPE_CHECKING

from ...errors import BudgetExceeded, ConfigError, CorruptRecord, ObjectNotFound, StorageError, TrainingError
from ...models import InstanceState, Listed, Problem, Run, RunState, RunStatus, check_number, validate_name
from ...providers import pricing
from ...providers.base import OfferRequest, Provider
from ...settings import MAX_DPH, MAX_RUN_HOURS, MAX_RUN_USD, MIN_HOURS, Settings
from ...storage import Storage
from ...storage.layout import lora_key
from ...training.estimate import interruptible_overrides, resolve_gpu
from ...training.launch import config_hash, launch_spec, new_run_id, trainer_env
from ...training.presets import load_preset, pick_tier, plan_steps
from ...training.spec import RunLimits, RunSpec
from ...training.status import read_status
from ..money.budgets import Budgets
from ..money.costs import CostLedger
from ..events import RUN_EVENT
from .launch import UNFINISHED, launch_run, launcher, settle_unfinished_launch
from ..library.store import download_lora, require_trainable
from ..money.ownership import launch_bucket_id
from .preflight import require_ready
from .recovery import Policy, announce_attempt
from .lifecycle import end_run
from ..home.state import StateStore

if TYPE_CHECKING:
    from ..core import Core
    from ..library.store import Library
    from ..money.instances import Instances
    from ..money.offers import Offers
    from ..notify import Notifier
    from .recovery import Recoveries

log = logging.getLogger(__name__)

ProviderFactory = Callable[[], AsyncContextManager[Provider]]
OpenProvider = Callable[..., ProviderFactory]  # (name, vram_gb=...) -> factory: App.provider
LORA_TYPES = ("character", "style", "concept")
INTERRUPTED = "the launch was interrupted (Ctrl-C or cancel) before it finished; nothing is left billing"


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
    # preemption recovery for this run (None: the settings'); see service/runs/recovery.py
    resume_wait_minutes: float | None = None
    max_attempts: int | None = None
    on_demand_after: int | None = None

    @classmethod
    def from_body(cls, body: Any) -> "TrainRequest":
        """A request from a JSON body (the sidebar's quick launch), checked strictly: known keys
        only, strings where strings go, real booleans and finite numbers."""
        if not isinstance(body, dict):
            raise ConfigError("the request body must be a JSON object")
        allowed = {"dataset", "lora_type", "lora_name", "trigger", "gpu", "provider", "interruptible",
                   "max_run_usd", "max_dph", "max_hours", "config"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(allowed))}")
        out: dict[str, Any] = {}
        for key in ("dataset", "lora_type", "lora_name", "trigger", "gpu", "provider"):
            value = body.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a string")
            out[key] = value
        if "interruptible" in body:
            if not isinstance(body["interruptible"], bool):
                raise ConfigError("interruptible must be true or false")
            out["interruptible"] = body["interruptible"]
        for key in ("max_run_usd", "max_dph", "max_hours"):  # a body has no 'off': above 0
            value = body.get(key)
            if value is None:
                continue
            low, high = _REQUEST_RANGES[key]
            out[key] = float(check_number(key, value, low, high, above=low == 0))
        if body.get("config") is not None:  # the sidebar's config editor: rank, learning rate, steps...
            from .train_config import editor_overrides

            if not isinstance(body["config"], dict):
                raise ConfigError("config must be an object")
            overrides, errors = editor_overrides(body["config"])
            if errors:
                raise ConfigError("; ".join(f"{e['field']}: {e['message']}" for e in errors))
            out["overrides"] = overrides
        if "dataset" not in out:
            raise ConfigError("dataset is required")
        if out.get("gpu") == "auto":
            del out["gpu"]
        return cls(**out).checked()

    def checked(self) -> "TrainRequest":
        """Names, choices and numbers valid, or a clear ConfigError before anything is read or
        rented: every number in range before any arithmetic (the CLI's flags, the Launch node's
        inputs and a body alike; a 401-digit ``--max-attempts`` must not reach ``float()``)."""
        for name, (low, high) in _REQUEST_RANGES.items():
            value = getattr(self, name)
            if value is None or (name in _ZERO_IS_DEFAULT and value == 0 and not isinstance(value, bool)):
                continue
            setattr(self, name, check_number(name, value, low, high, integer=name in _WHOLE))
        if not isinstance(self.interruptible, bool):
            raise ConfigError("interruptible must be true or false")
        if not isinstance(self.overrides, dict):
            raise ConfigError("overrides must be an object")
        self.dataset = validate_name(self.dataset, "dataset name")  # NFC: the name the bucket uses
        if self.lora_name is not None:
            self.lora_name = validate_name(self.lora_name, "LoRA name")
        if self.lora_type not in LORA_TYPES:
            raise ConfigError(f"lora_type must be one of {', '.join(LORA_TYPES)}, not {self.lora_type!r}")
        if self.provider not in ("vast", "local"):
            raise ConfigError(f"provider must be vast or local, not {self.provider!r}")
        return self


# what each number of a request may be (low, high); max_hours is at least a minute (MIN_HOURS)
_REQUEST_RANGES: dict[str, tuple[float, float]] = {
    "vram_gb": (1.0, 1024.0), "max_run_usd": (0.0, MAX_RUN_USD), "max_dph": (0.0, MAX_DPH),
    "max_hours": (MIN_HOURS, MAX_RUN_HOURS), "resume_wait_minutes": (0.0, 24 * 60.0), "max_attempts": (1, 50),
    "on_demand_after": (0, 50),
}
_WHOLE = ("max_attempts", "on_demand_after")
_ZERO_IS_DEFAULT = ("max_hours",)  # 0 hours: the settings' max_run_hours (start_run's ``or``)


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
    warnings: list[str] = field(default_factory=list)  # the dataset checks' (service/runs/preflight.py)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def start_run(
    req: TrainRequest, *, settings: Settings, storage: Storage, state: StateStore, open_provider: OpenProvider,
    python: str | None = None, clock: Callable[[], float] = time.time,
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
                                        trigger=spec.trigger)
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


def fetch_lora(storage: Storage, status: RunStatus, dest_dir: str | Path, lora_name: str) -> Path:
    """Download a finished run's LoRA into ``dest_dir`` (through :func:`.library.download_lora`,
    the one LoRA download: checksum verified, never a half file under the LoRA's name).

    ``lora_name`` is the name this controller launched the run with: the status in the bucket is
    untrusted (the rented host can write it), so a status that names any other LoRA is refused
    rather than followed."""
    if status.state is not RunState.DONE or not status.lora:
        raise TrainingError(f"run {status.run_id} ended {status.state.value}: {status.error or status.message}")
    if status.lora != lora_key(lora_name):
        raise TrainingError(f"run {status.run_id} names an unexpected LoRA location {status.lora!r} "
                            f"(launched as {lora_name!r}); not downloading it")
    return download_lora(storage, lora_name, dest_dir)


RUN_LIST_LIMIT = 50
_READ_IT: Any = object()
_ID_TIME = re.compile(r"-(\d{8}-\d{6})-[0-9a-f]{4}(?:\.b[0-9a-f]{12})?$")  # and the bucket's id, when tagged


def _launched(run_id: str, record: Any, status: Any) -> tuple[float, str]:
    """A run's place in a newest-first page: when it was launched (its record's time, else the
    time in its id, else when its ``status`` object was last written). Launch times do not move,
    so pages do not shift while runs report."""
    if record is not None and record.created_at:
        return record.created_at, run_id
    return _id_time(run_id) or (status.updated if status is not None else None) or 0.0, run_id


def _id_time(run_id: str) -> float:
    """When a run was launched, from its id (``<name>-<UTC time>-<hex>``, :func:`new_run_id`);
    0 for an id of another shape."""
    m = _ID_TIME.search(run_id)
    if not m:
        return 0.0
    try:
        return float(calendar.timegm(time.strptime(m.group(1), "%Y%m%d-%H%M%S")))
    except ValueError:
        return 0.0


class Runs:
    """Training runs for every edge: list and read them, start (idempotent), stop, follow.

    The one home of "stop a run": :meth:`stop` destroys every instance of the run, writes
    ``stopped`` to the bucket, records it here and emits the event, whether the CLI, a node or the
    sidebar asked. A run's view merges this controller's record with ``runs/<id>/status.json``
    (what the trainer reports; it wins, unless this controller ended the run, since a destroyed
    trainer cannot report that).
    """

    def __init__(self, core: Core, *, library: Library, instances: Instances, offers: Offers,
                 recovery: Recoveries, notify: Notifier):
        from ..library.media import ImageSniffer

        self.core = core
        self.library = library
        self.instances = instances
        self.offers = offers
        self.recovery = recovery
        self.notify = notify
        self.sniffer = ImageSniffer()

    # ---- reading -----------------------------------------------------------------------------
    async def list(self, limit: int = RUN_LIST_LIMIT) -> list[dict[str, Any]]:
        """Runs newest first: this controller's records merged with what the trainers report."""
        return (await self.listing(limit))["runs"]

    async def listing(self, limit: int = RUN_LIST_LIMIT, offset: int = 0) -> dict[str, Any]:
        """``{"runs", "problems", "total", "offset", "limit"}``: one page of the runs, newest
        first. A run prefix or status that cannot be read is reported (bucket content is
        untrusted), and the run left out unless this controller launched it (then it shows
        without a status). Costs two paged listings (the run folders, their ``status.json``)
        plus the statuses of the page, read in parallel and remembered by generation
        (:mod:`.listings`)."""
        from ..library.listings import Page

        page = Page(offset, limit)
        found = await asyncio.to_thread(self._list, page)
        return {"runs": found.items, "problems": [p.to_dict() for p in found.problems],
                **page.describe(found.total or 0)}

    def _list(self, page: Any) -> Listed[dict[str, Any]]:
        from ...storage import layout
        from ...training.status import MAX_STATUS_BYTES, STATUS, parse_status
        from ..library.listings import read_records

        state, storage = self.core.state, self.core.storage
        found: Listed[dict[str, Any]] = Listed()
        wanted = (page.offset + page.limit) if page.limit is not None else 1_000_000
        known = {r.id: r for r in state.list_runs(limit=wanted)}
        statuses = {o.key[len(layout.RUNS):-len("/" + STATUS)]: o
                    for o in storage.list(layout.RUNS, match_glob=f"{layout.RUNS}*/{STATUS}").objects}
        ids = list(known)
        for prefix in storage.list(layout.RUNS, delimiter="/").prefixes:
            run_id = prefix[len(layout.RUNS):].rstrip("/")
            if run_id in known:
                continue
            try:
                ids.append(validate_name(run_id, "run id"))
            except ConfigError as exc:
                found.problems.append(Problem.of(prefix, exc))

        ids.sort(key=lambda run_id: _launched(run_id, known.get(run_id), statuses.get(run_id)), reverse=True)
        found.total = len(ids)
        shown = page.of(ids)
        infos = [statuses[run_id] for run_id in shown if run_id in statuses]
        reads = {r.info.key: r for r in read_records(
            storage, infos, lambda body, key: parse_status(body, key[len(layout.RUNS):-len("/" + STATUS)]),
            kind="run-status", workers=self.core.settings.sync_workers, max_bytes=MAX_STATUS_BYTES)}
        for run_id in shown:
            record = known.get(run_id) or state.get_run(run_id)
            read = reads.get(layout.run_key(run_id, STATUS))
            if read is not None and isinstance(read.error, CorruptRecord):
                found.problems.append(Problem.of(layout.run_key(run_id, STATUS), read.error))
                if record is not None:
                    found.items.append(self._view(run_id, record, status=None))
                continue
            status = read.value if read is not None else None
            found.items.append(self._view(run_id, record, status=status))
        return found

    async def get(self, run_id: str) -> dict[str, Any]:
        """One run's view with its sample list."""
        validate_name(run_id, "run id")
        return await asyncio.to_thread(self._detail, run_id)

    def _detail(self, run_id: str) -> dict[str, Any]:
        record = self.core.state.get_run(run_id)
        view = self._view(run_id, record)
        if record is None and view.get("status") is None:
            raise ObjectNotFound(f"no run {run_id!r}")
        samples = self._sample_listing(run_id)
        view["samples"] = samples.items
        view["problems"] = [p.to_dict() for p in samples.problems]
        view["attempts"] = self.recovery.read(run_id)  # each attempt, the time lost to preemptions, the total
        return view

    def _view(self, run_id: str, record: Run | None, *, strict: bool = False,
              status: Any = _READ_IT) -> dict[str, Any]:
        """The run as the sidebar shows it; ``strict`` lets a corrupt ``status.json`` raise
        (listings report it) instead of showing the run without a status. ``status``: what a
        listing already read (None: no status), else it is read here."""
        if status is _READ_IT:
            try:
                status = read_status(self.core.storage, run_id)
            except CorruptRecord:
                if strict:
                    raise
                status = None
            except StorageError:
                status = None
        view: dict[str, Any] = {"id": run_id, "dataset": None, "preset": None, "lora_name": None, "gpu": "",
                                "dph": 0.0, "instance_id": None, "created_at": None, "error": None}
        if record is not None:
            view.update({k: v for k, v in record.to_dict().items() if k not in ("spec", "config_hash")})
        view["status"] = status.to_dict() if status else None
        if status is not None:
            # a run stopped or failed here cannot report any more: the store's end state wins
            ended_here = record is not None and record.state.is_terminal and not status.state.is_terminal
            view.update(state=record.state.value if ended_here else status.state.value, step=status.step,
                        total_steps=status.total_steps, loss=status.loss, eta_seconds=status.eta_seconds,
                        sec_per_step=status.sec_per_step, message=status.message, updated_at=status.updated_at)
            view["error"] = status.error or view["error"]
        view.setdefault("state", RunState.PENDING.value)
        view["live"] = not RunState(view["state"]).is_terminal
        view["cost_usd"] = round(CostLedger(self.core.state, self.core.clock).run_usd(run_id), 4)
        return view

    async def status(self, run_id: str) -> RunStatus:
        """What the run's trainer last reported (any machine can read it)."""
        validate_name(run_id, "run id")
        status = await asyncio.to_thread(read_status, self.core.storage, run_id)
        if status is None:
            raise ObjectNotFound(f"run {run_id!r} has no status in {self.core.storage.url} yet")
        return status

    async def statuses(self) -> list[RunStatus]:
        """Every run's reported status in the bucket, newest first; unreadable ones are skipped."""
        return (await self.status_listing())["statuses"]

    async def status_listing(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """``{"statuses", "problems", "total", "offset", "limit"}``: one page of the readable
        statuses, newest launched first (as :meth:`listing`), and the runs whose name or status
        could not be read (reported, never fatal to the list). One paged listing of
        ``runs/*/status.json``; only the page's statuses are read, in parallel, and remembered
        by generation (:mod:`.listings`)."""
        from ...storage import layout
        from ...training.status import MAX_STATUS_BYTES, STATUS, parse_status
        from ..library.listings import Page, read_records

        page = Page(offset, limit)

        def run() -> dict[str, Any]:
            storage = self.core.storage
            out, problems, runs = [], [], []

            def run_of(key: str) -> str:
                return key[len(layout.RUNS):-len("/" + STATUS)]

            for o in storage.list(layout.RUNS, match_glob=f"{layout.RUNS}*/{STATUS}").objects:
                try:
                    runs.append((validate_name(run_of(o.key), "run id"), o))
                except ConfigError as exc:
                    problems.append(Problem.of(f"{layout.RUNS}{run_of(o.key)}/", exc).to_dict())
            runs.sort(key=lambda r: _launched(r[0], None, r[1]), reverse=True)
            for read in read_records(
                    storage, [o for _, o in page.of(runs)], lambda body, key: parse_status(body, run_of(key)),
                    kind="run-status", workers=self.core.settings.sync_workers, max_bytes=MAX_STATUS_BYTES):
                if read.error is not None:
                    if not isinstance(read.error, ObjectNotFound):  # gone since the listing: not a problem
                        problems.append(Problem.of(read.info.key.rsplit("/", 1)[0] + "/", read.error).to_dict())
                    continue
                out.append(read.value)
            return {"statuses": out, "problems": problems, **page.describe(len(runs))}

        return await asyncio.to_thread(run)

    async def events(self, run_id: str, since: int = 0) -> dict[str, Any]:
        """Events from index ``since`` on, and the index to ask for next time."""
        from ...training.status import read_events

        validate_name(run_id, "run id")
        if since < 0:
            raise ConfigError("since must be >= 0")
        events = await asyncio.to_thread(read_events, self.core.storage, run_id, since)
        return {"events": events, "next": since + len(events)}

    async def samples(self, run_id: str) -> list[str]:
        return (await self.sample_listing(run_id))["samples"]

    async def sample_listing(self, run_id: str) -> dict[str, Any]:
        """``{"samples", "problems"}``: allowlisted images only, judged by their bytes (a rented
        host can write anything there); other files and names no route could serve are left
        out and reported."""
        validate_name(run_id, "run id")
        found = await asyncio.to_thread(self._sample_listing, run_id)
        return {"samples": found.items, "problems": [p.to_dict() for p in found.problems]}

    def _sample_listing(self, run_id: str) -> Listed[str]:
        from ...storage.layout import is_image, run_key
        from ..library.files import check_file_name

        storage = self.core.storage
        found: Listed[str] = Listed()
        prefix = run_key(run_id, "samples/")
        for obj in storage.list(prefix).objects:
            name = obj.key[len(prefix):]
            try:
                check_file_name(name, "sample name")
            except ConfigError as exc:
                found.problems.append(Problem.of(obj.key, exc))
                continue
            if not is_image(name) or self.sniffer.format_of(storage, obj) is None:
                found.problems.append(Problem(entry=obj.key[:300], message="not an image: left out of the samples"))
                continue
            found.items.append(name)
        return found

    async def sample(self, run_id: str, file: str) -> Any:
        """A sample as the browser may get it (a :class:`~.media.ServedFile`): typed by its
        bytes, not its name; anything else as a sandboxed attachment."""
        from ...storage.layout import run_key
        from ..library.files import check_file_name
        from ..library.media import read_media, served_file

        check_file_name(file)
        key = run_key(run_id, f"samples/{file}")
        data = await asyncio.to_thread(lambda: read_media(self.core.storage, key))
        return served_file(data, file)

    # ---- planning ----------------------------------------------------------------------------
    async def plan(self, *, dataset: str, lora_type: str, gpu: str | None, out: Path, vram: float | None = None,
                   images: int | None = None, trigger: str | None = None, name: str | None = None,
                   overrides: dict[str, Any] | None = None, dph: float | None = None,
                   live: bool = False) -> dict[str, Any]:
        """Write kohya's configs for a run into ``out`` and estimate its steps, time and cost.
        Rents nothing. The price is ``dph``, else the offer the picker would choose from the
        bundled offer book (for ``gpu`` when given); with ``live``, also asks vast.ai which offer
        it would rent now. A dataset in the bucket gets the same checks as a start
        (service/runs/preflight.py), reported under ``checks`` without refusing."""
        import json

        from ...errors import OfferUnavailable
        from ...training.estimate import TYPICAL_DPH, estimate
        from ...training.kohya_config import TrainJob, format_command, write_configs
        from ..money.offers import BOOK_SOURCE
        from .preflight import check_dataset

        overrides = overrides or {}
        dataset = validate_name(dataset, "dataset name")
        if Path(out).exists() and not Path(out).is_dir():
            raise ConfigError(f"{out} is a file: --out needs a folder (it is created if missing)")
        try:  # a dataset that is there must be complete; one that is not needs --images
            info = await self.library.require_trainable(dataset)
        except ObjectNotFound:
            if images is None:
                raise ConfigError(f"no dataset {dataset!r} in the bucket: upload it or pass --images N") from None
            info = None
        images = info.images if images is None and info else images
        trigger = trigger if trigger is not None else (info.trigger if info else None)
        gpu_name, gpu_vram = resolve_gpu(gpu) if gpu else (None, None)
        preset = load_preset(lora_type, vram or gpu_vram or 24, overrides)
        steps = plan_steps(preset, images or 0)
        offers = self.offers
        job_ = offers.job(preset=preset.name, tier=preset.tier, steps=steps.total_steps * steps.batch_size,
                          resolution=int(preset.dataset.get("resolution", 1024)))
        try:
            book = offers.pick_from_book(job_, gpu_name)
        except OfferUnavailable:
            book = None
        if gpu_name is None:
            gpu_name = book.best.offer.gpu_name if book is not None else "RTX 4090"
        price = dph if dph is not None else (book.best.offer.dph_total if book is not None and
                                              book.best.offer.gpu_name == gpu_name else TYPICAL_DPH.get(gpu_name))
        spec = RunSpec(run_id="planned", dataset=dataset, lora_type=lora_type, lora_name=name or dataset,
                       trigger=trigger or "", vram_gb=vram or gpu_vram or float(preset.tier), overrides=overrides)
        job = TrainJob(preset=preset, plan=steps, output_name=spec.lora_name, trigger=spec.trigger)

        def write() -> Any:
            files = write_configs(job, out, config_dir=job.paths.config_dir)
            (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1), "utf-8")
            return files

        files = await asyncio.to_thread(write)
        data: dict[str, Any] = {
            "preset": preset.name, "tier_gb": preset.tier, "plan": steps.to_dict(),
            "estimate": {**estimate(preset, steps, gpu_name, price).to_dict(),
                         "priced_from": "--dph" if dph is not None else BOOK_SOURCE if book is not None and
                         book.best.offer.gpu_name == gpu_name else "a typical price for the GPU (estimate)"},
            "book_offer": book.to_dict() if book is not None else None,
            "files": {"train": str(files.train_toml), "dataset": str(files.dataset_toml),
                      "prompts": str(files.prompts) if files.prompts else None, "spec": str(out / "spec.json")},
            "command": format_command(files.command), "prep": preset.prep, "checks": None,
        }
        if info is not None:
            ready = await asyncio.to_thread(check_dataset, self.core.storage, dataset, lora_type=lora_type,
                                            trigger=trigger)
            data["checks"] = ready.to_dict()
        if live:
            data["offer"] = (await offers.pick(job_)).to_dict()
        return data

    # ---- starting ----------------------------------------------------------------------------
    async def start(self, req: TrainRequest) -> StartResult:
        """Rent a GPU and train, or re-attach to the live run of the same dataset and settings."""
        storage = await asyncio.to_thread(lambda: self.core.storage)
        result = await start_run(req, settings=self.core.settings, storage=storage, state=self.core.state,
                                 open_provider=self.core.provider, python=self.core.python, clock=self.core.clock)
        self.core.emit(RUN_EVENT, await self.get(result.run_id))
        if not result.attached:
            await self.instances.announce()
        return result

    async def start_from_body(self, body: Any) -> dict[str, Any]:
        """The sidebar's quick launch: the same path as the Launch node and ``train start``."""
        return (await self.start(TrainRequest.from_body(body))).to_dict()

    # ---- stopping ----------------------------------------------------------------------------
    async def stop(self, run_id: str) -> dict[str, Any]:
        """Stop a run on the user's word: destroy its instances, then mark it STOPPED here and in
        the bucket. What the trainer uploaded (checkpoints, samples) stays; progress since the
        last checkpoint is lost."""
        from ...providers.base import run_label

        validate_name(run_id, "run id")
        record = await asyncio.to_thread(self.core.state.get_run, run_id)
        try:
            reported = await asyncio.to_thread(read_status, self.core.storage, run_id)
        except StorageError:
            reported = None
        if record is None and reported is None:
            raise ObjectNotFound(f"no run {run_id!r}: not launched from here and no status in the bucket")
        ended = (record is None or record.state.is_terminal) and (reported is None or reported.state.is_terminal)
        if ended:
            state = (record.state if record is not None else reported.state).value  # type: ignore[union-attr]
            raise ConfigError(f"run {run_id} has already ended ({state})")
        provider_name = record.provider if record is not None else "vast"
        async with self.core.provider(provider_name)() as provider:
            destroyed = await self.instances.destroy_all_of_run(provider, run_id, run_label(run_id))
        # the bucket first (a status.json that is not a status is replaced), then the store; an end
        # the bucket cannot take now is written again by the next guard round
        ended = await asyncio.to_thread(end_run, self.core.state, self.core.storage, run_id, RunState.STOPPED,
                                        "stopped by the user")
        if ended.problem:
            log.warning("run %s stopped; the bucket could not be told yet (retried by the guard): %s", run_id,
                        ended.problem)
        view = await self.get(run_id)
        self.core.emit(RUN_EVENT, view)
        if destroyed:
            await self.instances.announce()
        return {"id": run_id, "run_id": run_id, "state": view["state"], "destroyed_instances": destroyed,
                "destroyed": bool(destroyed)}

    # ---- following ---------------------------------------------------------------------------
    async def wait(self, run_id: str, **kwargs: Any) -> RunStatus:
        """Follow the run until it ends (see :func:`wait_for_run`)."""
        storage = await asyncio.to_thread(lambda: self.core.storage)
        return await wait_for_run(storage, run_id, **kwargs)

    async def follow(self, run_id: str, *, interval: float = 15.0,
                     sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        """Yield ``(new events, status or None, ended)`` until the run ends: when the bucket
        reports a terminal state, or this controller's record does (the guard marks a run whose
        instance vanished ``lost`` even when no trainer is left to say so)."""
        from ...training.status import read_events

        validate_name(run_id, "run id")
        seen = 0
        while True:
            storage = await asyncio.to_thread(lambda: self.core.storage)
            try:
                status = await asyncio.to_thread(read_status, storage, run_id)
            except StorageError:
                status = None
            new = await asyncio.to_thread(read_events, storage, run_id, seen)
            seen += len(new)
            record = await asyncio.to_thread(self.core.state.get_run, run_id)
            if seen == 0 and status is None and record is None:  # nothing will ever come: say so, do not wait
                raise ObjectNotFound(f"no run {run_id!r}: not launched from here and no status in {storage.url} "
                                     "(see: lora-cloud train status)")
            ended = (status is not None and status.state.is_terminal) or (record is not None and record.state.is_terminal)
            yield new, status, record, ended
            if ended:
                with contextlib.suppress(Exception):  # the follower (a CLI) is told too, once
                    self.notify.observe(RUN_EVENT, await self.get(run_id))
                return
            await sleep(interval)

