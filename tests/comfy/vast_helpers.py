"""The fake vast.ai pieces the route, quick-launch and browser tests share."""

from __future__ import annotations

import contextlib

import pytest

from comfy_lora_cloud.providers.base import LaunchSpec, OfferRequest, run_label
from comfy_lora_cloud.providers.vast import VastClient, VastProvider
from tests.comfy.conftest import SECRETS
from tests.fakes.vast.server import FakeVast
from tests.fakes.vast.state import ManualClock

KEY = SECRETS["vast_api_key"]


async def no_sleep(_seconds: float) -> None:
    return None


def provider_factory_for(fake: FakeVast):
    """``open_provider()`` for the service: a VastProvider on the fake that never sleeps on retries."""

    @contextlib.asynccontextmanager
    async def open_provider():
        async with VastClient(fake.url, KEY, sleep=no_sleep) as client:
            yield VastProvider(client)

    return open_provider


async def launch_for(open_provider, clock: ManualClock, run_id: str):
    """Rent the cheapest RTX 4090 under $0.60/hr for ``run_id`` and let it come up."""
    async with open_provider() as provider:
        offers = await provider.search(OfferRequest(gpu_names=["RTX 4090"], max_dph=0.6))
        inst = await provider.launch(min(offers, key=lambda o: o.dph_total),
                                     LaunchSpec(image="trainer:1", label=run_label(run_id)))
        clock.advance(60)
        return await provider.get(inst.id)


@pytest.fixture
def vast(tmp_path):
    clock = ManualClock()
    fake = FakeVast(KEY, clock=clock, created_s=1.0, loading_s=30.0, workdir=tmp_path / "instances")
    fake.start_in_thread()
    yield fake, clock
    fake.stop()


@pytest.fixture
def provider_factory(vast):
    return provider_factory_for(vast[0])
