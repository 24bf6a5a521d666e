"""The status protocol: the trainer reports through the bucket, every controller reads it there.

    runs/<run_id>/status.json     models.RunStatus, rewritten at most every ``min_interval`` s
                                  (at once on a state change)
    runs/<run_id>/events.jsonl    one JSON object per line: {"t", "kind", ...}, append-only
    runs/<run_id>/logs/trainer.log  the whole console output, re-uploaded at most every ``log_interval`` s
    runs/<run_id>/samples/<file>  sample images as kohya writes them

Object stores cannot append, so ``events.jsonl`` is rewritten whole: the events are few (state
changes, epochs, checkpoints, samples, and a ``progress`` point ``{step, loss}`` at most every
``progress_interval`` s, from which the sidebar redraws the loss graph after a reload), never one
per step. The rate bound keeps a 2000-step run
from writing 2000 objects; readers (ComfyUI, the CLI, a second laptop) need nothing else.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

from .. import jsonsafe
from ..errors import CorruptRecord, ObjectNotFound, StorageError, redact
from ..models import RunState, RunStatus
from ..storage import sync
from ..storage.base import Storage, read_record_bytes
from ..storage.layout import run_key

log = logging.getLogger(__name__)

STATUS = "status.json"
EVENTS = "events.jsonl"
LOG = "logs/trainer.log"


class StatusReporter:
    """Writes a run's status, events, log and samples to storage at a bounded rate.

    Storage errors while reporting are logged and retried at the next write, never raised:
    a flaky bucket must not kill a paid training run. :meth:`flush` (used at the end of a run)
    raises instead, since the final state must land.
    """

    def __init__(self, storage: Storage, run_id: str, *, min_interval: float = 10.0, log_interval: float = 60.0,
                 clock: Callable[[], float] = time.time, progress_interval: float | None = None):
        self.storage, self.run_id, self.clock = storage, run_id, clock
        self.min_interval, self.log_interval = min_interval, log_interval
        # a loss point for the graph every 30 s at most (never more often than status is written)
        self.progress_interval = max(min_interval, 30.0) if progress_interval is None else progress_interval
        self._last_progress = float("-inf")
        self.status = RunStatus(run_id=run_id, updated_at=clock())
        self.events: list[dict[str, Any]] = []
        self._dirty = self._events_dirty = False
        self._last_write = self._last_log = float("-inf")

    def resume_from_bucket(self) -> RunStatus | None:
        """Load what an earlier attempt wrote (after a kill or a preemption); None if nothing."""
        previous = read_status(self.storage, self.run_id)
        if previous is not None:
            self.status = previous
        self.events = read_events(self.storage, self.run_id)
        return previous

    def key(self, name: str) -> str:
        return run_key(self.run_id, name)

    def update(self, force: bool = False, **fields: Any) -> None:
        """Change status fields; written now if the state changed or ``force``, else at the rate."""
        state = fields.get("state")
        if state is not None and RunState(state) != self.status.state:
            force = True
            self.event("state", state=RunState(state).value, message=fields.get("message", ""))
        for name, value in fields.items():
            setattr(self.status, name, RunState(value) if name == "state" else value)
        loss = fields.get("loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss) and "step" in fields \
                and self.clock() - self._last_progress >= self.progress_interval:
            self._last_progress = self.clock()
            self.event("progress", step=self.status.step, loss=round(float(loss), 6))
        self._dirty = True
        self.maybe_write(force=force)

    def event(self, kind: str, **data: Any) -> None:
        self.events.append({"t": round(self.clock(), 3), "kind": kind, **data})
        self._events_dirty = True

    def maybe_write(self, force: bool = False) -> bool:
        if not (self._dirty or self._events_dirty):
            return False
        if not force and self.clock() - self._last_write < self.min_interval:
            return False
        try:
            self._write()
        except StorageError as exc:
            log.warning("could not write status of run %s: %s", self.run_id, exc)
            return False
        return True

    def flush(self) -> None:
        """Write everything now; raises StorageError so the caller knows the final state is not out."""
        self._dirty = True
        self._write()

    def _write(self) -> None:
        self.status.updated_at = self.clock()
        if self._events_dirty:
            body = "".join(json.dumps(e, default=str) + "\n" for e in self.events)
            self.storage.write_bytes(self.key(EVENTS), body.encode(), content_type="application/x-ndjson")
            self._events_dirty = False
        data = json.dumps(self.status.to_dict(), indent=1).encode()
        self.storage.write_bytes(self.key(STATUS), data, content_type="application/json")
        self._dirty = False
        self._last_write = self.clock()

    def upload_log(self, path: Path, force: bool = False) -> None:
        """Upload the console log (secrets masked), at most every ``log_interval`` seconds."""
        if not force and self.clock() - self._last_log < self.log_interval:
            return
        if not path.is_file():
            return
        text = redact(path.read_text("utf-8", errors="replace"))
        try:
            self.storage.write_bytes(self.key(LOG), text.encode(), content_type="text/plain; charset=utf-8")
            self._last_log = self.clock()
        except StorageError as exc:
            if force:
                raise
            log.warning("could not upload the log of run %s: %s", self.run_id, exc)

    def upload_samples(self, paths: list[Path], workers: int = 4) -> list[str]:
        """Push sample images (files of one folder) through the sync engine: in parallel, each
        verified. An event names each that landed; a failure is logged, and what did not land
        is left for the next call. Returns the names that landed."""
        if not paths:
            return []
        plan = sync.SyncPlan("push", paths[0].parent, self.key("samples/"),
                             transfers=[sync.Transfer(p.name, p.stat().st_size) for p in paths])
        landed: list[str] = []
        try:
            sync.apply(plan, self.storage, workers=workers, progress=lambda e: landed.append(e.rel))
        except StorageError as exc:
            log.warning("could not upload %d of %d sample(s): %s", len(paths) - len(landed), len(paths), exc)
        for name in sorted(landed):
            self.event("sample", key=self.key(f"samples/{name}"))
        return sorted(landed)


# ---- readers (CLI, ComfyUI, another laptop) ------------------------------------------------------
# Everything here is read as untrusted input: the rented host holds a key that can write any of it.
MAX_STATUS_BYTES = 256 * 1024  # a status is a few hundred bytes; more is not read (egress is billed)
MAX_EVENTS_BYTES = 8 * 1024 * 1024
_INT_FIELDS = ("step", "total_steps", "epoch", "total_epochs")
_OPTIONAL_NUMBERS = ("loss", "sec_per_step", "eta_seconds")
_OPTIONAL_TEXT = ("last_checkpoint", "lora", "error")
_MAX_COUNT = 2 ** 53  # the largest integer JavaScript (the sidebar) holds exactly


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_status(body: bytes, run_id: str) -> RunStatus:
    """``runs/<id>/status.json`` as a :class:`RunStatus`, or :class:`CorruptRecord`.

    The bucket is untrusted input (a rented host writes it, and a newer trainer may write a state
    this version does not know): everything is checked here, once, so a reader never meets a
    status that raises later. Unknown keys are ignored (forward compatible); a missing
    ``updated_at`` reads as 0 (the status does not vouch for its own freshness)."""
    def corrupt(why: str) -> CorruptRecord:
        return CorruptRecord(f"status of run {run_id} is not a valid status: {why}")

    try:
        data = jsonsafe.loads(body)
    except ValueError as exc:  # jsonsafe: malformed, too deep, a number past what we count
        raise corrupt(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise corrupt(f"a JSON {type(data).__name__}, not an object")
    if data.get("run_id", run_id) != run_id:
        raise corrupt(f"it names run {str(data.get('run_id'))[:100]!r}")
    state = data.get("state", RunState.PENDING.value)
    if state not in {s.value for s in RunState}:
        raise corrupt(f"unknown state {str(state)[:40]!r}")
    for name in _INT_FIELDS:
        value = data.get(name, 0)
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT):
            raise corrupt(f"{name} is {str(value)[:40]!r}, not a count")
    for name in _OPTIONAL_NUMBERS:
        value = data.get(name)
        if value is not None and not _is_number(value):
            raise corrupt(f"{name} is {str(value)[:40]!r}, not a finite number")
    for name in _OPTIONAL_TEXT:
        if not isinstance(data.get(name), (str, type(None))):
            raise corrupt(f"{name} is not text")
    if not isinstance(data.get("message", ""), str):
        raise corrupt("message is not text")
    updated = data.get("updated_at", 0.0)
    if not _is_number(updated) or not 0 <= updated < 1e11:  # 1e11 s is the year 5138: not a clock, a payload
        raise corrupt(f"updated_at is {str(updated)[:40]!r}, not a time")
    return RunStatus.from_dict({**data, "run_id": run_id, "state": state, "updated_at": float(updated)})


def read_status(storage: Storage, run_id: str) -> RunStatus | None:
    """The run's last written status, or None when the trainer has written nothing yet.

    Raises :class:`CorruptRecord` for a status that exists but is not a valid one (also one over
    :data:`MAX_STATUS_BYTES`, refused from ``stat`` before any byte is fetched), and
    :class:`StorageError` when the bucket cannot be read."""
    try:
        body = read_record_bytes(storage, run_key(run_id, STATUS), MAX_STATUS_BYTES)
    except ObjectNotFound:
        return None
    return parse_status(body, run_id)


def end_run_in_bucket(storage: Storage, run_id: str, state: RunState, message: str) -> bool:
    """Write a terminal ``state`` to the run's status for every reader, unless the trainer
    reported an end first (a run that finished keeps its word). Returns whether it wrote.

    The one way a controller ends a run in the bucket (the guard, a failed launch, ``train
    stop``). A status that is not a valid one is replaced (its trainer cannot speak any more);
    the events log is kept and extended by one ``state`` event: a retry after a write that
    landed the events but not the status adds no second one. Raises :class:`StorageError` when
    the bucket cannot be read or written, so a caller can try again on its next round."""
    reporter = StatusReporter(storage, run_id)
    try:
        previous = reporter.resume_from_bucket()
    except CorruptRecord:
        previous = None
        reporter.events = read_events(storage, run_id)
    if previous is not None and previous.state.is_terminal:
        return False
    status = reporter.status
    told = [e for e in reporter.events if e.get("kind") == "state"]
    if status.state is not state and not (told and told[-1].get("state") == state.value):
        reporter.event("state", state=state.value, message=message)
    status.state, status.message, status.eta_seconds = state, message, None
    if state is not RunState.STOPPED:
        status.error = message
    reporter.flush()
    return True


def read_events(storage: Storage, run_id: str, since: int = 0) -> list[dict[str, Any]]:
    """Events from index ``since`` on (a poller passes how many it has already seen).

    Only lines that are JSON objects with a text ``kind`` (and a numeric ``t``) count: a torn or
    hostile line must not hide the others, nor reach a reader as something else than an event.
    A log over :data:`MAX_EVENTS_BYTES` is not fetched at all (it is no trainer's) and reads as
    empty, so a writer that extends it starts a fresh one."""
    key = run_key(run_id, EVENTS)
    try:
        info = storage.stat(key)
        if info.size > MAX_EVENTS_BYTES:
            log.warning("events of run %s are %d bytes, more than %d: not read", run_id, info.size, MAX_EVENTS_BYTES)
            return []
        body = storage.read_bytes(key).decode("utf-8", errors="replace")
    except ObjectNotFound:
        return []
    events = []
    for line in body.splitlines():
        try:
            event = jsonsafe.loads(line)
        except ValueError:
            continue
        if (isinstance(event, dict) and isinstance(event.get("kind"), str) and _is_number(event.get("t", 0))
                and len(line) <= 64 * 1024):
            events.append(event)
    return events[since:]
