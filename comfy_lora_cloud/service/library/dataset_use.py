"""Which live runs train on a dataset: the one home of "may this dataset be changed now".

A trainer pulls its dataset at the start of each attempt (a preempted run pulls it again on its
new instance), so changing a dataset (``dataset upload --replace`` or ``--merge``, the Save
Dataset node, the sidebar's publish) while a run that uses it is live would train on a mix of
two datasets, or resume a run on other images than it started with. :func:`require_unused`
refuses that (:class:`~comfy_lora_cloud.errors.DatasetInUse`), unless the caller forces it; the
trainer's pull checks the other side (``worker/dataset_pull.py``: the manifest must not change
while it pulls).

A run uses a dataset when its ``runs/<id>/spec.json`` names it (every launch writes one before
renting). It is live when its ``status.json`` has a state that is not terminal, when its status
cannot be read (doubt), or when it has no status yet and its spec is younger than
:data:`LAUNCH_WINDOW_S` (a launch in progress). The bucket is the witness, so a run launched from
another machine counts as much as one launched here. Bucket content is untrusted: a spec that
cannot be read names no dataset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ...errors import CorruptRecord, DatasetInUse, StorageError
from ...storage import layout
from ...storage.base import Storage, parse_json_record
from ...training.spec import SPEC
from ...training.status import read_status
from .listings import read_records

#: a run with a spec but no status yet counts as launching for this long
LAUNCH_WINDOW_S = 3600.0
MAX_SPEC_BYTES = 256 * 1024


@dataclass(frozen=True)
class DatasetUser:
    run_id: str
    state: str  # the run's reported state; "launching" (no status yet) or "unreadable status"


def _dataset_of(body: bytes, key: str) -> str | None:
    spec = parse_json_record(body, key)
    dataset = spec.get("dataset") if isinstance(spec, dict) else None
    return dataset if isinstance(dataset, str) else None


def live_runs_using(storage: Storage, name: str, *, workers: int = 16,
                    clock: Callable[[], float] = time.time) -> list[DatasetUser]:
    """The live runs (module docstring) whose spec names dataset ``name``, by run id."""
    specs = storage.list(layout.RUNS, match_glob=f"{layout.RUNS}*/{SPEC}").objects
    users: list[DatasetUser] = []
    for read in read_records(storage, specs, _dataset_of, kind="run-spec-dataset", workers=workers,
                             max_bytes=MAX_SPEC_BYTES):
        if read.value != name:
            continue
        run_id = read.info.key[len(layout.RUNS):-len("/" + SPEC)]
        try:
            status = read_status(storage, run_id)
        except CorruptRecord:
            users.append(DatasetUser(run_id, "unreadable status"))
            continue
        except StorageError:
            users.append(DatasetUser(run_id, "status out of reach"))
            continue
        if status is None:
            if read.info.updated is None or clock() - read.info.updated < LAUNCH_WINDOW_S:
                users.append(DatasetUser(run_id, "launching"))
        elif not status.state.is_terminal:
            users.append(DatasetUser(run_id, status.state.value))
    return sorted(users, key=lambda u: u.run_id)


def require_unused(storage: Storage, name: str, *, change: str, workers: int = 16,
                   clock: Callable[[], float] = time.time) -> None:
    """:class:`DatasetInUse` when a live run uses dataset ``name``; ``change`` says what the caller
    was about to do ("replace", "merge")."""
    users = live_runs_using(storage, name, workers=workers, clock=clock)
    if not users:
        return
    runs = ", ".join(f"{u.run_id} ({u.state})" for u in users[:5]) + (f" and {len(users) - 5} more"
                                                                       if len(users) > 5 else "")
    first = users[0].run_id
    raise DatasetInUse(
        f"dataset {name!r} is used by live run {runs}: to {change} it now could make a trainer train on a mix of "
        f"old and new files, or resume on other images than it started with, so nothing was changed. Wait for the "
        f"run to end, stop it (lora-cloud train stop {first}), save under another name, or pass --force",
        runs=[u.run_id for u in users])
