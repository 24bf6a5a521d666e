"""Checkpoints that survive the instance: kohya's ``<name>-NNNNNN-state`` dirs in the bucket.

    runs/<id>/checkpoints/<state dir>/<file>   every file of one state dir
    runs/<id>/checkpoints/latest.json          {"name", "epoch", "step", "files": {file: {size, md5}}}

``latest.json`` is written only after every file of its state dir is uploaded and verified,
so it always names a whole checkpoint; a kill during an upload leaves the previous one in
force. A local state dir counts only when it has ``train_state.json`` and ``model.safetensors``
(kohya killed mid-save leaves a partial one).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChecksumMismatch, ObjectNotFound, StorageError
from ..storage import sync
from ..storage.base import Storage, checksum_file
from ..storage.layout import run_key

log = logging.getLogger(__name__)
LATEST = "checkpoints/latest.json"
_EPOCH_STATE = re.compile(r"-(\d{6})-state$")


@dataclass(frozen=True)
class Checkpoint:
    name: str
    epoch: int
    step: int
    files: dict[str, dict[str, object]]


def complete_states(output_dir: Path) -> list[tuple[int, Path]]:
    """Whole epoch state dirs in ``output_dir``, oldest first, as (epoch, path)."""
    found = []
    if not output_dir.is_dir():
        return found
    for d in output_dir.iterdir():
        m = _EPOCH_STATE.search(d.name)
        if m and d.is_dir() and (d / "train_state.json").is_file() and (d / "model.safetensors").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def upload_checkpoint(storage: Storage, run_id: str, state_dir: Path, epoch: int, step: int, *,
                      workers: int = 4) -> Checkpoint:
    """Push one state dir through the sync engine (its files in parallel, each verified; files a
    failed try already landed are skipped), then point ``latest.json`` at it and delete the
    previous checkpoint's files. The manifest's md5s are what the uploads hashed: each file is
    read once."""
    previous = read_latest(storage, run_id)
    prefix = run_key(run_id, f"checkpoints/{state_dir.name}/")
    hashed = sync.HashCache()  # in memory: what the uploads (or the plan) hashed
    sync.apply(sync.plan_push(storage, state_dir, prefix, cache=hashed), storage, workers=workers, cache=hashed)
    files: dict[str, dict[str, object]] = {}
    for f in sync.scan_local(state_dir):
        c = hashed.checksums(f.path, f, f.path)
        files[f.rel] = {"size": c.size, "md5": c.md5}
    cp = Checkpoint(name=state_dir.name, epoch=epoch, step=step, files=files)
    storage.write_bytes(run_key(run_id, LATEST), json.dumps(cp.__dict__).encode(), content_type="application/json")
    if previous and previous.name != cp.name:
        try:
            storage.delete_prefix(run_key(run_id, f"checkpoints/{previous.name}/"))
        except StorageError as exc:  # only costs bucket space
            log.warning("could not delete old checkpoint %s: %s", previous.name, exc)
    return cp


def read_latest(storage: Storage, run_id: str) -> Checkpoint | None:
    try:
        data = json.loads(storage.read_bytes(run_key(run_id, LATEST)))
        return Checkpoint(name=data["name"], epoch=int(data["epoch"]), step=int(data.get("step", 0)),
                          files=dict(data["files"]))
    except ObjectNotFound:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable checkpoints/latest.json of run %s: %s", run_id, exc)
        return None


def download_checkpoint(storage: Storage, run_id: str, cp: Checkpoint, output_dir: Path) -> Path:
    """Bring the checkpoint back into kohya's ``output_dir``; every file is checked against the
    manifest, so a resumed run never starts from a torn state. A file already there with the
    manifest's checksum is kept (an instance that resumes after a preemption still has its disk)."""
    state_dir = output_dir / cp.name
    state_dir.mkdir(parents=True, exist_ok=True)
    prefix = run_key(run_id, f"checkpoints/{cp.name}/")
    for name, meta in cp.files.items():
        target = state_dir / name
        if _matches(target, meta):
            continue
        storage.download_file(prefix + name, target)
        if checksum_file(target).md5 != meta.get("md5"):
            raise ChecksumMismatch(f"checkpoint file {name} does not match its manifest")
    for required in ("train_state.json", "model.safetensors"):
        if not (state_dir / required).is_file():
            raise ChecksumMismatch(f"checkpoint {cp.name} lacks {required}")
    return state_dir


def _matches(path: Path, meta: dict[str, object]) -> bool:
    return path.is_file() and path.stat().st_size == meta.get("size") and checksum_file(path).md5 == meta.get("md5")
