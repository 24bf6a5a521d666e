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
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TYPE_CHECKING

from ...errors import ConfigError, CorruptRecord, ObjectNotFound, StorageError
from ...models import Listed, Problem, Run, RunState, RunStatus, validate_name
from ...training.estimate import resolve_gpu
from ...training.presets import load_preset, plan_steps
from ...training.spec import RunSpec
from ...training.status import read_status
from ..events import RUN_EVENT
from ..money import CostLedger
from .follow import fetch_lora, wait_for_run
from .lifecycle import end_run
from .request import TrainRequest
from .start import StartResult, start_run
from .views import PlanFiles, RunEvents, RunPage, RunPlan, RunView, SampleListing, StatusPage, StopResult

if TYPE_CHECKING:
    from ..core import Core
    from ..library import Library
    from ..money import Instances
    from ..money import Offers
    from ..notify import Notifier
    from .recoveries import Recoveries

log = logging.getLogger(__name__)


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
        from ..library import ImageSniffer

        self.core = core
        self.library = library
        self.instances = instances
        self.offers = offers
        self.recovery = recovery
        self.notify = notify
        self.sniffer = ImageSniffer()

    # ---- reading -----------------------------------------------------------------------------
    async def list(self, limit: int = RUN_LIST_LIMIT) -> list[RunView]:
        """Runs newest first: this controller's records merged with what the trainers report."""
        return list((await self.listing(limit)).runs)

    async def listing(self, limit: int = RUN_LIST_LIMIT, offset: int = 0) -> RunPage:
        """One page of the runs, newest first. A run prefix or status that cannot be read is reported (bucket content is
        untrusted), and the run left out unless this controller launched it (then it shows
        without a status). Costs two paged listings (the run folders, their ``status.json``)
        plus the statuses of the page, read in parallel and remembered by generation
        (:mod:`.listings`)."""
        from ..library import Page

        page = Page(offset, limit)
        found = await asyncio.to_thread(self._list, page)
        return RunPage(tuple(found.items), tuple(found.problems), found.total or 0, page.offset, page.limit)

    def _list(self, page: Any) -> Listed[RunView]:
        from ...storage import layout
        from ...training.status import MAX_STATUS_BYTES, STATUS, parse_status
        from ..library import read_records

        state, storage = self.core.state, self.core.storage
        found: Listed[RunView] = Listed()
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

    async def get(self, run_id: str) -> RunView:
        """One run's view with its sample list and its attempts."""
        validate_name(run_id, "run id")
        return await asyncio.to_thread(self._detail, run_id)

    def _detail(self, run_id: str) -> RunView:
        record = self.core.state.get_run(run_id)
        view = self._view(run_id, record)
        if record is None and view.status is None:
            raise ObjectNotFound(f"no run {run_id!r}")
        samples = self._sample_listing(run_id)
        # each attempt, the time lost to preemptions, the total
        return dataclasses.replace(view, samples=tuple(samples.items), problems=tuple(samples.problems),
                                   attempts=self.recovery.read(run_id))

    def _view(self, run_id: str, record: Run | None, *, strict: bool = False,
              status: Any = _READ_IT) -> RunView:
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
        fields: dict[str, Any] = {}
        state = RunState.PENDING
        if record is not None:
            fields = {"dataset": record.dataset, "preset": record.preset, "lora_name": record.lora_name,
                      "gpu": record.gpu, "dph": record.dph, "instance_id": record.instance_id,
                      "created_at": record.created_at, "error": record.error, "provider": record.provider,
                      "updated_at": record.updated_at}
            state = record.state
        if status is not None:
            # a run stopped or failed here cannot report any more: the store's end state wins
            ended_here = record is not None and record.state.is_terminal and not status.state.is_terminal
            state = record.state if ended_here and record is not None else status.state
            fields.update(status=status, step=status.step, total_steps=status.total_steps, loss=status.loss,
                          eta_seconds=status.eta_seconds, sec_per_step=status.sec_per_step, message=status.message,
                          updated_at=status.updated_at, error=status.error or fields.get("error"))
        return RunView(id=run_id, state=state, live=not state.is_terminal,
                       cost_usd=round(CostLedger(self.core.state, self.core.clock).run_usd(run_id), 4), **fields)

    async def status(self, run_id: str) -> RunStatus:
        """What the run's trainer last reported (any machine can read it)."""
        validate_name(run_id, "run id")
        status = await asyncio.to_thread(read_status, self.core.storage, run_id)
        if status is None:
            raise ObjectNotFound(f"run {run_id!r} has no status in {self.core.storage.url} yet")
        return status

    async def statuses(self) -> list[RunStatus]:
        """Every run's reported status in the bucket, newest first; unreadable ones are skipped."""
        return list((await self.status_listing()).statuses)

    async def status_listing(self, offset: int = 0, limit: int | None = None) -> StatusPage:
        """One page of the readable statuses, newest launched first (as :meth:`listing`), and the
        runs whose name or status could not be read (reported, never fatal to the list). One paged listing of
        ``runs/*/status.json``; only the page's statuses are read, in parallel, and remembered
        by generation (:mod:`.listings`)."""
        from ...storage import layout
        from ...training.status import MAX_STATUS_BYTES, STATUS, parse_status
        from ..library import Page, read_records

        page = Page(offset, limit)

        def run() -> StatusPage:
            storage = self.core.storage
            out: list[RunStatus] = []
            problems: list[Problem] = []
            runs = []

            def run_of(key: str) -> str:
                return key[len(layout.RUNS):-len("/" + STATUS)]

            for o in storage.list(layout.RUNS, match_glob=f"{layout.RUNS}*/{STATUS}").objects:
                try:
                    runs.append((validate_name(run_of(o.key), "run id"), o))
                except ConfigError as exc:
                    problems.append(Problem.of(f"{layout.RUNS}{run_of(o.key)}/", exc))
            runs.sort(key=lambda r: _launched(r[0], None, r[1]), reverse=True)
            for read in read_records(
                    storage, [o for _, o in page.of(runs)], lambda body, key: parse_status(body, run_of(key)),
                    kind="run-status", workers=self.core.settings.sync_workers, max_bytes=MAX_STATUS_BYTES):
                if read.error is not None:
                    if not isinstance(read.error, ObjectNotFound):  # gone since the listing: not a problem
                        problems.append(Problem.of(read.info.key.rsplit("/", 1)[0] + "/", read.error))
                    continue
                out.append(read.value)
            return StatusPage(tuple(out), tuple(problems), len(runs), page.offset, page.limit)

        return await asyncio.to_thread(run)

    async def events(self, run_id: str, since: int = 0) -> RunEvents:
        """Events from index ``since`` on, and the index to ask for next time."""
        from ...training.status import read_events

        validate_name(run_id, "run id")
        if since < 0:
            raise ConfigError("since must be >= 0")
        events = await asyncio.to_thread(read_events, self.core.storage, run_id, since)
        return RunEvents(tuple(events), since + len(events))

    async def samples(self, run_id: str) -> list[str]:
        return list((await self.sample_listing(run_id)).samples)

    async def sample_listing(self, run_id: str) -> SampleListing:
        """Allowlisted images only, judged by their bytes (a rented
        host can write anything there); other files and names no route could serve are left
        out and reported."""
        validate_name(run_id, "run id")
        found = await asyncio.to_thread(self._sample_listing, run_id)
        return SampleListing(tuple(found.items), tuple(found.problems))

    def _sample_listing(self, run_id: str) -> Listed[str]:
        from ...storage.layout import is_image, run_key
        from ..library import check_file_name

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
        from ..library import check_file_name
        from ..library import read_media, served_file

        check_file_name(file)
        key = run_key(run_id, f"samples/{file}")
        data = await asyncio.to_thread(lambda: read_media(self.core.storage, key))
        return served_file(data, file)

    # ---- planning ----------------------------------------------------------------------------
    async def plan(self, *, dataset: str, lora_type: str, gpu: str | None, out: Path, vram: float | None = None,
                   images: int | None = None, trigger: str | None = None, name: str | None = None,
                   overrides: dict[str, Any] | None = None, dph: float | None = None,
                   live: bool = False) -> RunPlan:
        """Write kohya's configs for a run into ``out`` and estimate its steps, time and cost.
        Rents nothing. The price is ``dph``, else the offer the picker would choose from the
        bundled offer book (for ``gpu`` when given); with ``live``, also asks vast.ai which offer
        it would rent now. A dataset in the bucket gets the same checks as a start
        (service/runs/preflight.py), reported under ``checks`` without refusing."""
        import json

        from ...errors import OfferUnavailable
        from ...training.estimate import TYPICAL_DPH, estimate
        from ...training.kohya_config import TrainJob, format_command, write_configs
        from ..money import BOOK_SOURCE
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
        checks = None
        if info is not None:
            checks = await asyncio.to_thread(check_dataset, self.core.storage, dataset, lora_type=lora_type,
                                             trigger=trigger)
        return RunPlan(
            preset=preset.name, tier_gb=preset.tier, steps=steps, estimate=estimate(preset, steps, gpu_name, price),
            priced_from="--dph" if dph is not None else BOOK_SOURCE if book is not None and
            book.best.offer.gpu_name == gpu_name else "a typical price for the GPU (estimate)",
            book_offer=book,
            files=PlanFiles(train=str(files.train_toml), dataset=str(files.dataset_toml),
                            prompts=str(files.prompts) if files.prompts else None, spec=str(out / "spec.json")),
            command=format_command(files.command), prep=preset.prep, checks=checks,
            offer=(await offers.pick(job_)) if live else None)

    # ---- starting ----------------------------------------------------------------------------
    async def start(self, req: TrainRequest) -> StartResult:
        """Rent a GPU and train, or re-attach to the live run of the same dataset and settings."""
        storage = await asyncio.to_thread(lambda: self.core.storage)
        result = await start_run(req, settings=self.core.settings, storage=storage, state=self.core.state,
                                 open_provider=self.core.provider, python=self.core.python, clock=self.core.clock,
                                 transfers=self.library.offload)  # the preflight download: off ComfyUI's loop
        self.core.emit(RUN_EVENT, (await self.get(result.run_id)).to_dict())
        if not result.attached:
            await self.instances.announce()
        return result

    # ---- stopping ----------------------------------------------------------------------------
    async def stop(self, run_id: str) -> StopResult:
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
        self.core.emit(RUN_EVENT, view.to_dict())
        if destroyed:
            await self.instances.announce()
        return StopResult(run_id, view.state, tuple(destroyed))

    # ---- following ---------------------------------------------------------------------------
    async def wait(self, run_id: str, **kwargs: Any) -> RunStatus:
        """Follow the run until it ends (see :func:`wait_for_run`)."""
        storage = await asyncio.to_thread(lambda: self.core.storage)
        return await wait_for_run(storage, run_id, **kwargs)

    async def fetch_lora(self, run_id: str, lora_name: str, **wait: Any) -> Path:
        """Follow the run to its end (:meth:`wait`, whose ``should_stop`` stops the waiting, never
        the run), then bring its LoRA into the app's LoRA folder (``loras_dir``: where the sidebar
        and ``lora download`` look too), checksum verified. ``lora_name``: the name it was launched
        with (:func:`~.follow.fetch_lora` refuses a status naming another)."""
        status = await self.wait(run_id, **wait)
        return await asyncio.to_thread(lambda: fetch_lora(self.core.storage, status, self.core.loras_dir, lora_name))

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
                    self.notify.observe(RUN_EVENT, (await self.get(run_id)).to_dict())
                return
            await sleep(interval)

