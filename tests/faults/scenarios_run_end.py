"""Fault scenarios for the one end of a run (``service/runs/lifecycle.py``) on the paths that
reach it besides the watchdog: a launch that failed, and a run whose instance vanished.

In each, the bucket refuses the run's ``status.json`` (the gate of ``scenarios_run_limits``) while
the end is decided: the store keeps the run live, no later round turns the end first decided
into another one, and once the bucket takes writes again the next round ends the run in both,
with one end event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Iterator

from comfy_lora_cloud.errors import LoraCloudError
from comfy_lora_cloud.models import Run, RunState
from comfy_lora_cloud.providers.base import LaunchSpec
from comfy_lora_cloud.providers.vast import VastClient, VastProvider, offer_from_vast
from comfy_lora_cloud.service.runs.launch import launch_run
from comfy_lora_cloud.storage.gcs import GcsStorage

from .harness import API_KEY, World
from .registry import scenario
from .scenarios_guard import Results, all_of, local_state, ours, problem
from .scenarios_run_limits import gate_status, heal, one_end_event


@contextlib.contextmanager
def emulator_at(url: str) -> Iterator[None]:
    """This process reaches the bucket at ``url`` (the gate) while inside."""
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = before


async def _launch_that_fails(w: World, run_id: str) -> None:
    """``launch_run`` as ``train start`` calls it, through the gate: vast.ai creates the instance
    but answers the create with a 400, so the launch fails after renting."""
    storage = GcsStorage.from_url(w.env["LORA_CLOUD_STORAGE"])
    async with VastClient(w.fake.url, API_KEY, backoff_base=0.01) as client:
        rows = await client.search_offers({"num_gpus": {"eq": 1}, "rentable": {"eq": True},
                                           "order": [["dph_total", "asc"]], "limit": 1})
        w.fake.call("faults", {"n": 1, "status": 400, "path_contains": "/asks/", "act_first": True})
        run = Run(id=run_id, dataset="cats", preset="character", lora_name="cats")
        try:
            await launch_run(VastProvider(client), w.store, run, offer_from_vast(rows[0]),
                             LaunchSpec(image="i", label="", disk_gb=20), storage=storage)
        except LoraCloudError:
            return
    raise AssertionError("the launch was meant to fail")


def failed_launch_healed(w: World, results: Results) -> None:
    assert w.gate.refusals > 0, "the gate never refused the status write"
    run = w.store.get_run(w.failed)
    assert run.error.startswith("launch failed"), run  # the end decided first, not reconcile's "interrupted"
    assert not w.store.get_kv(f"run:end_pending:{w.failed}")
    assert not results[-1]["reconcile"]["failed_runs"], results[-1]  # the retry ended it, before reconcile
    assert not [r for r in w.store.list_instances() if r["run_id"] == w.failed]  # what it rented: destroyed


@scenario("failed_launch_bucket_end_fails", "a launch fails after vast.ai rented the instance, and the bucket "
          "refuses the run's status.json: the instance is destroyed at once, the store keeps the run live "
          "(reconcile does not make it 'interrupted'), and once the bucket heals the run ends FAILED in both, "
          "with one end event", passes=2, between=heal,
          check=lambda w, r: all_of(failed_launch_healed, local_state(w.failed, RunState.FAILED),
                                    one_end_event(w.failed, RunState.FAILED),
                                    problem("bucket", w.failed, "still cannot be written"),
                                    local_state("mine", RunState.TRAINING))(w, r))
def _failed_launch(w: World) -> None:
    w.failed = w.tagged("launchfail")
    w.treasure([w.failed, "mine"])
    ours(w, "mine")
    w.status(w.failed, RunState.LAUNCHING)  # as the launch's announcement leaves it
    w.expect_end(w.failed, RunState.FAILED)
    gate_status(w, w.failed)
    with emulator_at(w.gate.url):
        asyncio.run(_launch_that_fails(w, w.failed))
    assert w.store.get_run(w.failed).state is RunState.LAUNCHING  # the bucket refused: the store waits


def lost_healed(w: World, results: Results) -> None:
    assert w.gate.refusals > 0, "the gate never refused the status write"
    first, second = results
    assert not first["reconcile"]["lost_runs"] and not second["reconcile"]["lost_runs"], results
    assert w.store.get_run(w.vanished).error.startswith(f"instance {w.gone} vanished"), w.store.get_run(w.vanished)
    assert not w.store.get_kv(f"run:end_pending:{w.vanished}")


@scenario("vanished_instance_bucket_end_fails", "a live run's instance vanishes and the bucket refuses its "
          "status.json: reconcile reports it and keeps the end, and the next round ends the run LOST in both, "
          "with one end event", passes=2, between=heal,
          check=lambda w, r: all_of(lost_healed, local_state(w.vanished, RunState.LOST),
                                    one_end_event(w.vanished, RunState.LOST),
                                    problem("bucket", w.vanished, "could not mark run"),
                                    local_state("mine", RunState.TRAINING))(w, r))
def _vanished(w: World) -> None:
    w.vanished = w.tagged("vanished")
    w.treasure([w.vanished, "mine"])
    ours(w, "mine")
    w.gone = w.instance(w.vanished, "die", "vanished at the provider")
    w.local_run(w.vanished, w.gone)
    w.status(w.vanished)
    w.fake.call("vanish", {"id": int(w.gone)})
    w.expect_end(w.vanished, RunState.LOST)
    gate_status(w, w.vanished)
