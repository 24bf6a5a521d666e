"""The trainer's Hugging Face client (huggingface_hub, the ``trainer`` extra). What controller and
trainer share about base weights (the gated message, the :class:`WeightSource` protocol, the
bucket cache rules) lives in :mod:`comfy_lora_cloud.training.weights` and is re-exported here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TrainingError
from ..training.weights import WeightSource, cache_weights, check_weights, fetch_weights, gated_message, missing_weights

__all__ = ["HubWeights", "WeightSource", "cache_weights", "check_weights", "fetch_weights", "gated_message",
           "missing_weights"]


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
