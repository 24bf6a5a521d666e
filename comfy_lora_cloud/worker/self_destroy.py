"""The trainer destroys its own vast.ai instance when it is done, failed or out of time.

vast.ai gives every container ``CONTAINER_ID`` and ``CONTAINER_API_KEY`` (a key scoped to that
instance), so the trainer needs no account key. The base URL comes from
``LORA_CLOUD_VAST_URL`` (tests point it at a local server). Without ``CONTAINER_ID`` (a local
run, the local provider) there is nothing to destroy.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import httpx

from ..errors import ProviderAPIError, redact, register_secret
from ..retry import RETRY_STATUSES, backoff
from ..settings import VAST_URL

log = logging.getLogger(__name__)


@dataclass
class SelfDestroy:
    instance_id: str | None
    api_key: str | None
    base_url: str = VAST_URL
    attempts: int = 5
    sleep: Callable[[float], None] = time.sleep
    transport: httpx.BaseTransport | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs) -> "SelfDestroy":
        env = os.environ if env is None else env
        key = env.get("CONTAINER_API_KEY") or None
        register_secret(key)
        return cls(instance_id=env.get("CONTAINER_ID") or None, api_key=key,
                   base_url=(env.get("LORA_CLOUD_VAST_URL") or VAST_URL).rstrip("/"), **kwargs)

    @property
    def enabled(self) -> bool:
        return bool(self.instance_id and self.api_key)

    def __call__(self) -> bool:
        """DELETE the instance; True when it is gone (404 counts: already destroyed).

        Retries network errors, 429 and 5xx with backoff; raises ProviderAPIError when every
        attempt failed, so the caller can log it (the controller's reconcile pass is the backstop).
        """
        if not self.enabled:
            log.info("no CONTAINER_ID/CONTAINER_API_KEY: not on vast.ai, nothing to destroy")
            return False
        url = f"{self.base_url}/api/v0/instances/{self.instance_id}/"
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        last, retry_after = "", None
        with httpx.Client(transport=self.transport, timeout=30.0) as client:
            for attempt in range(self.attempts):
                try:
                    r = client.delete(url, headers=headers)
                except httpx.HTTPError as exc:
                    last, retry_after = f"{type(exc).__name__}: {exc}", None
                else:
                    if r.status_code < 300 or r.status_code == 404:
                        log.info("destroyed instance %s (HTTP %s)", self.instance_id, r.status_code)
                        return True
                    last, retry_after = f"HTTP {r.status_code}: {r.text[:200]}", r.headers.get("Retry-After")
                    if r.status_code not in RETRY_STATUSES:
                        break
                if attempt + 1 < self.attempts:
                    self.sleep(backoff(attempt, base=2.0, cap=30.0, retry_after=retry_after))
        raise ProviderAPIError(redact(f"could not destroy instance {self.instance_id}: {last}"))
