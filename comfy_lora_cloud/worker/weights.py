"""Base weights for kohya: the bucket's ``models/`` cache first, else Hugging Face.

FLUX.1-dev is gated: a token of an account that has not accepted the licence gets 403. The
trainer checks access before it pulls the dataset or starts anything slow, and says how to fix
it. The Hugging Face side is the :class:`WeightSource` protocol so tests never touch the network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Protocol

from ..errors import LoraCloudError, TrainingError
from ..storage.base import Storage
from ..storage.layout import model_key as cache_key
from ..training.kohya_config import GATED_REPOS, MODEL_FILES

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


class HubWeights:
    """Hugging Face Hub through ``huggingface_hub`` (imported here only: the trainer extra)."""

    def __init__(self, token: str | None):
        self.token = token

    def check(self, repo_id: str) -> None:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

        try:
            HfApi().auth_check(repo_id, token=self.token)
        except GatedRepoError:
            raise TrainingError(gated_message(repo_id)) from None
        except RepositoryNotFoundError:
            raise TrainingError(f"{repo_id} not found on Hugging Face, or the token is missing or invalid "
                                "(a gated repo needs a token)") from None
        except HfHubHTTPError as exc:
            raise TrainingError(f"Hugging Face refused access to {repo_id}: {exc}") from None

    def download(self, repo_id: str, filename: str, dest_dir: Path) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import GatedRepoError

        try:
            return Path(hf_hub_download(repo_id, filename, local_dir=dest_dir, token=self.token))
        except GatedRepoError:
            raise TrainingError(gated_message(repo_id)) from None


def check_weights(storage: Storage, source: WeightSource, files: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """Fail fast: every file the bucket does not cache must be readable on the Hub.
    Returns the file names that will come from the Hub. ``files``: ``(file name, repo)`` pairs,
    default the trainer's (the inference image passes its own)."""
    files = list(MODEL_FILES.values() if files is None else files)
    missing = [(f, repo) for f, repo in files if not storage.exists(cache_key(f))]
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
