"""The trainer's DELETE of its own instance, against an httpx MockTransport app."""

from __future__ import annotations

import httpx
import pytest

from comfy_lora_cloud.errors import ProviderAPIError
from comfy_lora_cloud.worker.self_destroy import SelfDestroy

ENV = {"CONTAINER_ID": "77", "CONTAINER_API_KEY": "ck-secret-123456", "LORA_CLOUD_VAST_URL": "http://vast.test/"}


class App:
    def __init__(self, *statuses: int):
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0), json={"msg": "ck-secret-123456 nope"})


def _destroy(app: App, sleeps: list[float]) -> SelfDestroy:
    return SelfDestroy.from_env(ENV, transport=httpx.MockTransport(app), sleep=sleeps.append)


def test_deletes_its_instance_with_the_container_key():
    app, sleeps = App(200), []
    assert _destroy(app, sleeps)() is True
    (req,) = app.requests
    assert (req.method, str(req.url)) == ("DELETE", "http://vast.test/api/v0/instances/77/")
    assert req.headers["Authorization"] == "Bearer ck-secret-123456"
    assert sleeps == []


def test_retries_5xx_and_429_then_succeeds():
    app, sleeps = App(503, 429, 200), []
    assert _destroy(app, sleeps)() is True
    # the shared retry policy (comfy_lora_cloud.retry): full-jitter backoff, doubling its bound
    assert len(app.requests) == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 2.0 and 0 <= sleeps[1] <= 4.0


def test_already_gone_counts_as_done():
    assert _destroy(App(404), [])() is True


def test_auth_error_is_not_retried_and_the_key_is_masked():
    app = App(401, 200)
    with pytest.raises(ProviderAPIError) as exc:
        _destroy(app, [])()
    assert len(app.requests) == 1
    assert "HTTP 401" in exc.value.message and "ck-secret-123456" not in exc.value.message


def test_gives_up_after_the_attempts():
    app, sleeps = App(*[500] * 5), []
    with pytest.raises(ProviderAPIError):
        _destroy(app, sleeps)()
    assert len(app.requests) == 5 and len(sleeps) == 4


def test_not_on_vast_means_nothing_to_do():
    d = SelfDestroy.from_env({}, transport=httpx.MockTransport(App()))
    assert d.enabled is False and d() is False
