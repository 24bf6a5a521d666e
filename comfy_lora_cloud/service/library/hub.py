"""The controller's Hugging Face client: is the token valid, may it read a (gated) repo, and one
file's download. A :class:`~comfy_lora_cloud.training.weights.WeightSource` (the trainer's is
``worker.weights.HubWeights``), built on httpx so the controller needs no huggingface_hub.

The endpoint is ``HF_ENDPOINT`` (the variable huggingface_hub itself reads) or huggingface.co;
tests point it at a fake Hub on 127.0.0.1 (tests/fakes/hf.py). The answers it understands are the
Hub's: ``GET /api/whoami-v2``, ``GET /api/models/<repo>/auth-check`` (200, or 401/403/404 with an
``X-Error-Code`` of ``GatedRepo`` or ``RepoNotFound``) and ``GET /<repo>/resolve/main/<file>``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import httpx

from ...errors import ConfigError, TrainingError, redact
from ...training.weights import gated_message

HF_ENDPOINT = "https://huggingface.co"
TIMEOUT = httpx.Timeout(20.0, read=60.0)


class Hub(Protocol):
    """What the doctor and ``models cache`` need from Hugging Face."""

    def whoami(self) -> str:
        """The token's account name; ConfigError when there is no token or it is refused."""

    def check(self, repo_id: str) -> None:
        """TrainingError when the token cannot read ``repo_id`` (gated and not accepted, missing)."""

    def download(self, repo_id: str, filename: str, dest_dir: Path) -> Path:
        """One file into ``dest_dir``; its path."""


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")


class HttpHub:
    def __init__(self, token: str | None, base_url: str | None = None, *, transport: httpx.BaseTransport | None = None):
        self.token = token
        self.base_url = (base_url or endpoint()).rstrip("/")
        self.transport = transport

    def _client(self, timeout: httpx.Timeout = TIMEOUT) -> httpx.Client:
        headers = {"User-Agent": "comfy-lora-cloud"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=self.transport,
                            follow_redirects=True)

    def _get(self, path: str) -> httpx.Response:
        try:
            with self._client() as c:
                return c.get(path)
        except httpx.HTTPError as exc:
            raise TrainingError(f"Hugging Face ({self.base_url}) cannot be reached: {redact(str(exc)) or type(exc).__name__}"
                                ) from None

    def whoami(self) -> str:
        if not self.token:
            raise ConfigError("no Hugging Face token is set (lora-cloud config set hf_token)")
        r = self._get("/api/whoami-v2")
        if r.status_code == 401:
            raise ConfigError("Hugging Face refuses the token (invalid or revoked): make a new read token at "
                              "https://huggingface.co/settings/tokens and `lora-cloud config set hf_token`")
        if r.status_code != 200:
            raise TrainingError(f"Hugging Face answered {r.status_code} to whoami")
        try:
            name = r.json().get("name")
        except (ValueError, AttributeError):
            name = None
        return str(name or "?")[:100]

    def check(self, repo_id: str) -> None:
        r = self._get(f"/api/models/{repo_id}/auth-check")
        if r.status_code == 200:
            return
        code = r.headers.get("X-Error-Code", "")
        if code == "GatedRepo" or r.status_code == 403:
            raise TrainingError(gated_message(repo_id))
        if code == "RepoNotFound" or r.status_code in (401, 404):
            raise TrainingError(f"{repo_id} not found on Hugging Face, or the token is missing or invalid "
                                "(a gated repo needs a token)")
        raise TrainingError(f"Hugging Face answered {r.status_code} for {repo_id}")

    def download(self, repo_id: str, filename: str, dest_dir: Path) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / filename
        part = dest_dir / f".{filename}.part"
        try:
            with self._client(httpx.Timeout(60.0, read=300.0)) as c, \
                    c.stream("GET", f"/{repo_id}/resolve/main/{filename}") as r:
                if r.status_code in (401, 403):
                    raise TrainingError(gated_message(repo_id))
                if r.status_code != 200:
                    raise TrainingError(f"Hugging Face answered {r.status_code} for {repo_id}/{filename}")
                with part.open("wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
        except httpx.HTTPError as exc:
            part.unlink(missing_ok=True)
            raise TrainingError(f"downloading {repo_id}/{filename} failed: {redact(str(exc))}") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(target)
        return target
