"""The one destroy (service/money/destroy.py), over real HTTP against the fake vast.ai: the
provider's destroy, the store's record and the log line together; an instance already gone is
no error; a caller that must go on gets a problem, never an exception."""

from __future__ import annotations

import logging

import pytest

from comfy_lora_cloud.errors import ProviderError
from comfy_lora_cloud.providers.base import run_label
from comfy_lora_cloud.providers.vast import VastClient, VastProvider
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.service.money.destroy import destroy_instance
from comfy_lora_cloud.service.money.problems import Problems
from tests.service.conftest import API_KEY


@pytest.fixture
async def env(fake, clock, tmp_path):
    async with VastClient(fake.url, API_KEY, sleep=_no_sleep, max_attempts=2) as client:
        provider = VastProvider(client)
        state = StateStore(tmp_path / "state.db")
        rows = await client.search_offers({"num_gpus": {"eq": 1}, "order": [["dph_total", "asc"]], "limit": 1})
        made = await client.create_instance(rows[0]["id"], image="i", label=run_label("r1"), disk_gb=10)
        iid = str(made["new_contract"])
        state.put_instance(await provider.get(iid), "r1", seen_at=clock())
        yield fake, clock, provider, state, iid


async def _no_sleep(_s: float) -> None:
    return None


def _row(state: StateStore, iid: str) -> dict:
    return next(r for r in state.list_instances(include_destroyed=True) if r["id"] == iid)


async def test_destroys_records_and_logs_and_a_second_call_is_no_error(env, caplog):
    fake, clock, provider, state, iid = env
    caplog.set_level(logging.WARNING, logger="comfy_lora_cloud.service.money.destroy")
    done = await destroy_instance(provider, state, iid, why="over max_dph", label=run_label("r1"), clock=clock)
    assert (done.gone, done.existed, done.problem) == (True, True, "")
    assert fake.state.get(int(iid)) is None  # gone at the provider, confirmed by reading back
    row = _row(state, iid)
    assert row["state"] == "destroyed" and row["destroyed_at"] == pytest.approx(clock())
    assert [r.getMessage() for r in caplog.records] == [f"destroyed instance {iid} (label 'lora-cloud:r1'): "
                                                        "over max_dph"]

    again = await destroy_instance(provider, state, iid, why="over max_dph", clock=clock, problems=Problems())
    assert (again.gone, again.existed, again.problem) == (True, False, "")  # already gone: nothing to undo


async def test_a_failing_provider_is_a_problem_for_a_guard_and_an_error_for_an_edge(env):
    fake, clock, provider, state, iid = env
    fake.fail_next(20, 503, path_contains=f"/instances/{iid}")
    problems = Problems()
    done = await destroy_instance(provider, state, iid, why="unowned", what=f"session instance {iid}",
                                  clock=clock, problems=problems)
    assert not done.gone and done.error
    (p,) = list(problems)
    assert (p.kind, p.subject) == ("destroy", iid) and p.message.startswith(f"could not destroy session instance "
                                                                             f"{iid} (unowned): ")
    assert fake.state.get(int(iid)) is not None and _row(state, iid)["state"] != "destroyed"  # nothing claimed

    fake.fail_next(20, 503, path_contains=f"/instances/{iid}")
    with pytest.raises(ProviderError):  # an edge answering a user: the error as it came
        await destroy_instance(provider, state, iid, why="destroyed on the user's word", clock=clock)
    assert _row(state, iid)["state"] != "destroyed"
    fake.faults.clear()
