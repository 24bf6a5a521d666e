"""The Launch node's preemption policy inputs (comfy/nodes/training.py:LoraCloudLaunchTrainer, built by
comfy/nodes/runs.py:launch_request) reach the run's spec as ``train start``'s options do, through the
same ``app.runs.start``; their defaults leave the policy to the settings. Against the fake vast.ai
server and the GCS emulator (tests/service/test_recovery.py's world)."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.comfy.nodes.runs import launch_request
from comfy_lora_cloud.service import graph
from comfy_lora_cloud.service.runs import Policy
from tests.service.test_recovery import world  # noqa: F401  (a fixture)

NODE_DEFAULTS = dict(lora_type="character", lora_name="", trigger="", gpu="4090", provider="vast",
                     interruptible=True, max_usd=10.0, max_dph=2.0, max_hours=6.0)


async def _launch(app, **inputs):
    ref = graph.DatasetRef("cat", app.storage.url, 3, 3)
    result = await app.runs.start(launch_request(ref, **NODE_DEFAULTS, **inputs))  # as the node calls it
    return app.state.get_run(result.run_id)


async def test_the_nodes_policy_choices_reach_the_runs_spec(world):
    app, _emitted = world
    run = await _launch(app, resume_wait_minutes=3.0, max_attempts=2, on_demand_after=1)
    assert run.spec["recovery"] == {"wait_minutes": 3.0, "max_attempts": 2, "on_demand_after": 1}
    policy = Policy.of(app.settings, run)
    assert (policy.wait_s, policy.max_attempts, policy.on_demand_after) == (180.0, 2, 1)


async def test_the_nodes_defaults_follow_the_settings_and_0_means_never(world):
    app, _emitted = world
    run = await _launch(app)  # the node's defaults: the settings' policy, like train start without options
    assert not run.spec.get("recovery")
    policy = Policy.of(app.settings, run)
    assert (policy.wait_s, policy.max_attempts, policy.on_demand_after) == (
        60 * app.settings.preempt_wait_minutes, app.settings.preempt_max_attempts, app.settings.preempt_on_demand_after)
    req = launch_request(graph.DatasetRef("cat", "x", 1, 1), **NODE_DEFAULTS, on_demand_after=0,
                               resume_wait_minutes=0.0)
    assert (req.on_demand_after, req.resume_wait_minutes, req.max_attempts) == (0, 0.0, None)


async def test_an_impossible_choice_is_refused_before_anything_is_rented(world, fake):
    app, _emitted = world
    with pytest.raises(ConfigError, match="max_attempts must be .*at least 1 and at most 50"):
        await _launch(app, max_attempts=51)
    assert fake.state.created_count == 0
