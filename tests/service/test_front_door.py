"""Behaviours with one home, the same from every edge: destroy refuses what is not ours, an
interrupted start leaves a clear state, the live cost is the ledger's, a quick launch body is
checked strictly."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.cli.main import app as cli_app
from comfy_lora_cloud.comfy.routes.runs import train_request
from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.models import Instance, InstanceState, Offer, RunState
from comfy_lora_cloud.providers.base import Capability, LaunchSpec, OfferRequest
from comfy_lora_cloud.service.money.costs import CostLedger, billed_rates
from comfy_lora_cloud.service.runs import INTERRUPTED, TrainRequest
from comfy_lora_cloud.training.status import read_status
from tests.comfy.conftest import NOW, seed
from tests.comfy.vast_helpers import KEY, provider_factory, vast  # noqa: F401


def test_cli_destroy_refuses_an_id_that_is_not_ours(clean_env, vast, provider_factory, monkeypatch):
    fake, _clock = vast
    monkeypatch.setenv("LORA_CLOUD_VAST_URL", fake.url)
    monkeypatch.setenv("LORA_CLOUD_VAST_API_KEY", KEY)

    async def launch_unlabelled():
        async with provider_factory() as provider:
            offer = min(await provider.search(OfferRequest(gpu_names=["RTX 4090"])), key=lambda o: o.dph_total)
            return await provider.launch(offer, LaunchSpec(image="their-job:1", label="my-own-jupyter"))

    theirs = asyncio.run(launch_unlabelled())
    for instance_id in ("abc", "999999", str(theirs.id)):
        r = CliRunner().invoke(cli_app, ["instances", "destroy", instance_id, "--yes"])
        assert r.exit_code == 3, r.output
        assert f"no live instance {instance_id!r}" in r.output and not r.output.startswith("destroyed")
    assert fake.state.get(int(theirs.id)) is not None  # the account's other instance is untouched


def test_live_cost_is_the_ledgers_and_never_counts_storage_twice(tmp_path, clean_env):
    s = seed(tmp_path, clean_env)
    inst = Instance(id="88", label="lora-cloud:run-1", state=InstanceState.RUNNING, gpu_name="RTX 4090",
                    dph_total=0.5, storage_dph=0.1, created_at=NOW - 7200)
    s.state.put_instance(inst, run_id="run-1", seen_at=NOW - 7200)  # launched 2 h ago, on our clock
    ledger = CostLedger(s.state, lambda: NOW - 3600)
    ledger.accrue([inst], first_seen={"88": NOW - 7200})  # booked for the first hour, at the ledger's rule
    listed = {i.id: i for i in asyncio.run(s.app.instances.list())}["88"]
    # an hour booked + an hour pending, both at dph_total (which already includes storage)
    assert listed.cost_usd == pytest.approx(1.0, abs=1e-3)
    assert listed.cost_usd == pytest.approx(CostLedger(s.state, lambda: NOW).live_usd(
        "88", "running", 0.5, 0.1, NOW - 7200, NOW), abs=1e-4)
    assert billed_rates("running", 0.5, 0.1) == {"gpu": pytest.approx(0.4), "storage": 0.1}
    assert billed_rates("stopped", 0.5, 0.1) == {"storage": 0.1}


class _InterruptedProvider:
    """A provider whose create call never returns: the user pressed Ctrl-C while it was in flight."""

    name = "local"
    capabilities = frozenset({Capability.STOP, Capability.LOGS})
    account = None

    async def search(self, req):
        return [Offer(id="local", gpu_name="test GPU", gpu_ram_gb=24.0, provider="local")]

    async def launch(self, offer, spec):
        raise KeyboardInterrupt

    async def list(self, label_prefix=""):
        return []

    async def get(self, instance_id):
        return None

    async def destroy(self, instance_id):
        return False


def test_an_interrupted_start_leaves_a_clear_state(tmp_path, clean_env):
    from tests.training.trainer_helpers import seed_bucket

    s = seed(tmp_path, clean_env)
    seed_bucket(s.storage, images=3)

    @contextlib.asynccontextmanager
    async def open_interrupted():
        yield _InterruptedProvider()

    s.app.providers["local"] = open_interrupted
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(s.app.runs.start(TrainRequest(dataset="cat", provider="local")))
    (run,) = [r for r in s.state.list_runs() if r.dataset == "cat"]
    assert run.state is RunState.FAILED and run.error == INTERRUPTED
    status = read_status(s.storage, run.id)
    assert status.state is RunState.FAILED and "CancelledError" not in json.dumps(status.to_dict())


@pytest.mark.parametrize("body, problem", [
    ({}, "dataset is required"),
    ([], "JSON object"),
    ({"dataset": "cats", "interruptible": "no"}, "true or false"),
    ({"dataset": "cats", "interruptible": 0}, "true or false"),
    ({"dataset": "cats", "max_dph": "1"}, "must be a number above 0"),
    ({"dataset": "cats", "max_dph": float("nan")}, "must be a number above 0"),
    ({"dataset": "cats", "lora_type": "portrait"}, "lora_type"),
    ({"dataset": "../x"}, "dataset name"),
    ({"dataset": "cats", "provider": "aws"}, "provider"),
    ({"dataset": "cats", "rm": "-rf"}, "unknown field"),
])
def test_quick_launch_bodies_are_checked_strictly(body, problem):
    with pytest.raises(ConfigError, match=problem):
        train_request(body)


def test_quick_launch_body_that_is_fine():
    req = train_request({"dataset": "cats", "gpu": "auto", "interruptible": True, "max_dph": 1})
    assert (req.dataset, req.gpu, req.interruptible, req.max_dph, req.lora_type) == ("cats", None, True, 1.0, "character")
