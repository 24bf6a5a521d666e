"""A controller ends a run: the bucket first, then the state store, and an end the bucket did not
take is written again every guard round until both say it.

The only code that writes a terminal run state (DONE, FAILED, TIMED_OUT, STOPPED, LOST) into
the state store or the bucket on a controller's behalf: the budget watchdog, reconcile, the
preemption recovery giving up, a failed or interrupted launch, a stale record found by a new
start, and ``train stop`` all end a run through :func:`end_run`. (The trainer on the instance
writes its own status; that is the run speaking, not a controller.)

Every reader but this home follows the bucket, so the bucket learns the end first
(:func:`~..training.status.end_run_in_bucket`: a trainer's own end wins, and a retry adds no
second ``state`` event); the store follows once the bucket has it. When the bucket cannot be
written, the end is kept in the store's key/value table (:data:`PENDING`) and the run is left
live there: the guard calls :func:`finish_pending` at the start of each round, before reconcile
judges the run (which would otherwise call a run whose instance is gone ``lost``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from ...errors import CorruptRecord, StorageError
from ...models import RunState, RunStatus
from ...storage.base import Storage
from ...training.status import end_run_in_bucket, read_status
from ..home import StateStore

log = logging.getLogger(__name__)

PENDING = "run:end_pending:"  # + run id -> {"state", "message"}: an end the bucket has not taken yet


@dataclass(frozen=True)
class Ended:
    """What :func:`end_run` did: ``state`` the run ended with in both (the trainer's own end, when
    it reported one first), or ``problem`` why the bucket could not take it (kept for a retry)."""

    run_id: str
    state: RunState | None = None
    problem: str = ""


def end_run(state: StateStore, storage: Storage | None, run_id: str, end: RunState, message: str) -> Ended:
    """End ``run_id`` with ``end`` in the bucket, then in the store (blocking). When the bucket
    already holds an end (its trainer's, or an earlier controller's), that end is the one the
    store records, with the bucket's error. ``storage`` None: a run with no bucket (the store
    only). A store that cannot be read or written raises :class:`CorruptRecord` (the bucket has
    the end by then)."""
    if not end.is_terminal:
        raise ValueError(f"{end.value} is not the end of a run")
    first = _pending(state, run_id)
    if first is not None:  # the end decided first stands: a later round must not turn FAILED into LOST
        end, message = first
    error: str | None = message
    if storage is not None:
        try:
            if not end_run_in_bucket(storage, run_id, end, message):
                stood = _bucket_end(storage, run_id)  # its trainer's end stands, here too
                if stood is not None:
                    end, error = stood.state, stood.error
        except StorageError as exc:
            _remember(state, run_id, end, message)
            return Ended(run_id, problem=exc.message)
    run = state.get_run(run_id)
    if run is not None and not run.state.is_terminal:
        fields = {"state": end} if error is None else {"state": end, "error": error}
        state.update_run(run_id, **fields)
    if state.get_kv(PENDING + run_id):
        state.set_kv(PENDING + run_id, "")
    return Ended(run_id, end)


def pending_end(state: StateStore, run_id: str) -> str | None:
    """The message of an end of ``run_id`` the bucket has not taken yet, or None: a run with
    one has ended, though the store still calls it live until the bucket takes it."""
    first = _pending(state, run_id)
    return first[1] if first is not None else None


def _pending(state: StateStore, run_id: str) -> tuple[RunState, str] | None:
    try:
        raw = state.get_kv(PENDING + run_id)
    except CorruptRecord:  # a damaged store keeps nothing: the bucket still hears the end first
        return None
    if not raw:
        return None
    try:
        data = json.loads(raw)
        end, message = RunState(data["state"]), str(data["message"])
    except (ValueError, KeyError, TypeError):
        return None  # finish_pending drops it, saying so
    return (end, message) if end.is_terminal else None


def finish_pending(state: StateStore, storage: Storage | None) -> list[Ended]:
    """Write again every end the bucket did not take (blocking); one that is not an end this
    module wrote is dropped."""
    out = []
    for key, raw in state.kv_items(PENDING):
        if not raw:
            continue
        run_id = key[len(PENDING):]
        try:
            data = json.loads(raw)
            end, message = RunState(data["state"]), str(data["message"])
            if not end.is_terminal:
                raise ValueError(f"{end.value} is not an end")
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a pending end of run %s that cannot be read: %r", run_id, raw[:80])
            state.set_kv(key, "")
            continue
        out.append(end_run(state, storage, run_id, end, message))
    return out


def _remember(state: StateStore, run_id: str, end: RunState, message: str) -> None:
    try:
        state.set_kv(PENDING + run_id, json.dumps({"state": end.value, "message": message}))
    except CorruptRecord as exc:  # nothing to retry from: reconcile settles the run as usual
        log.warning("could not keep the end of run %s for a retry: %s", run_id, exc.message)


def _bucket_end(storage: Storage, run_id: str) -> RunStatus | None:
    try:
        status = read_status(storage, run_id)
    except StorageError:
        return None
    return status if status is not None and status.state.is_terminal else None
