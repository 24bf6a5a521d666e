"""Base weights for kohya: the bucket's ``models/`` cache first, else Hugging Face. What the
trainer (worker/) and the controller (service/: ``lora-cloud doctor``, ``lora-cloud models
cache``) share.

FLUX.1-dev is gated: a token of an account that has not accepted the licence gets 403. The
trainer checks access before it pulls the dataset or starts anything slow, and says how to fix
it. The Hugging Face side is the :class:`WeightSource` protocol so tests never touch the network:
the trainer's is ``worker.weights.HubWeights`` (huggingface_hub), the controller's
``service.hub.HttpHub`` (a small httpx client, so the controller needs no huggingface_hub).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Protocol

from ..errors import LoraCloudError, TrainingError
from ..storage.base import Storage
from ..storage.layout import model_key as cache_key
from .kohya_config import GATED_REPOS, MODEL_FILES

log = logging.getLogger(__name__)


def gated_message(repo_id: str) -> str:
    return (f"{repo_id} is gated on Hugging Face and this token cannot read it. Open "
            f"https://huggingface.co/{repo_id} while logged in, accept the licence, then set a token of that "
            "account (lora-cloud config set hf_token ...); or put the weights in the bucket's models/ folder.")


class WeightSource(Protocol):
    def check(self, repo_id: str) -> None:
        """Raise TrainingError when ``repo_id`` cannot be read (gated, bad token, missing)."""

    def download(self, repo_id: str, filename: str, dest_dir: Path) -> Path:
        """Download one file into ``dest_dir``; return its path."""


def check_weights(storage: Storage, source: WeightSource, files: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """Fail fast: every file the bucket does not cache must be readable on the Hub.
    Returns the file names that will come from the Hub. ``files``: ``(file name, repo)`` pairs,
    default the trainer's (the inference image passes its own)."""
    missing = missing_weights(storage, files)
    for repo in sorted({repo for _, repo in missing}, key=lambda r: (r not in GATED_REPOS, r)):
        source.check(repo)
    return [f for f, _ in missing]


def fetch_weights(storage: Storage, source: WeightSource, dest_dir: Path, *, cache: bool = True,
                  files: Iterable[tuple[str, str]] | None = None) -> dict[str, Path]:
    """Get every base-weight file into ``dest_dir``; Hub downloads are cached in the bucket
    (best effort: a failed cache upload costs only the next run's download), so a bucket
    downloads each file from the Hub once, whatever instance needs it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for filename, repo in (MODEL_FILES.values() if files is None else files):
        target = dest_dir / filename
        if target.is_file():
            paths[filename] = target
            continue
        if storage.exists(cache_key(filename)):
            storage.download_file(cache_key(filename), target)
        else:
            got = source.download(repo, filename, dest_dir)
            if got != target:
                got.replace(target)
            if cache:
                try:
                    storage.upload_file(target, cache_key(filename))
                except LoraCloudError as exc:
                    log.warning("could not cache %s in the bucket: %s", filename, exc)
        paths[filename] = target
    return paths


def missing_weights(storage: Storage, files: Iterable[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(file name, Hugging Face repo) of each base-weights file (default: the trainer's) the
    bucket's ``models/`` lacks."""
    return [(f, repo) for f, repo in (MODEL_FILES.values() if files is None else files)
            if not storage.exists(cache_key(f))]


def cache_weights(storage: Storage, source: WeightSource | None, work_dir: Path, *,
                  local_dirs: list[Path] = (), on_file: Callable[[str, str], None] | None = None) -> dict[str, str]:
    """Put every missing base-weights file into the bucket's ``models/``, one at a time (a Flux
    file is 23 GB: only one is on the local disk at once). A file found in ``local_dirs`` (a
    ComfyUI ``models/`` folder, say) is uploaded from there; else it is downloaded from the Hub
    through ``source`` into ``work_dir`` and removed after its upload. Returns ``{file: where it
    came from}`` (``"cached"`` for files the bucket already had)."""
    done: dict[str, str] = {}
    missing = dict(missing_weights(storage))
    for filename, repo in MODEL_FILES.values():
        if filename not in missing:
            done[filename] = "cached"
            continue
        found = next((p for d in local_dirs for p in sorted(Path(d).expanduser().rglob(filename)) if p.is_file()),
                     None)
        if on_file is not None:
            on_file(filename, str(found) if found else repo)
        if found is not None:
            storage.upload_file(found, cache_key(filename))
            done[filename] = str(found)
            continue
        if source is None:
            raise TrainingError(f"{filename} is not in the bucket and no local copy was given: pass --from DIR (a "
                                "folder holding it) or set hf_token to download it from Hugging Face")
        source.check(repo)
        work_dir.mkdir(parents=True, exist_ok=True)
        got = source.download(repo, filename, work_dir)
        try:
            storage.upload_file(got, cache_key(filename))
        finally:
            got.unlink(missing_ok=True)
        done[filename] = f"huggingface.co/{repo}"
    return done
