"""Live events: the poller's diffs, the pack's own loop, and the hook-up into ComfyUI's server."""

from __future__ import annotations

import asyncio
import sys
import threading
import types

import pytest
from aiohttp import web

from comfy_lora_cloud.comfy import events as ev
from comfy_lora_cloud.comfy import routes as routes_mod
from comfy_lora_cloud.comfy import wiring
from comfy_lora_cloud.models import Cost, RunState
from comfy_lora_cloud.service.guard.memory import GuardMemory
from comfy_lora_cloud.service.guard.watchdog import Watchdog
from comfy_lora_cloud.service.loop import Loop
from comfy_lora_cloud.service.money.budgets import Budgets

from tests.comfy.conftest import NOW, seed, write_status


async def test_poller_sends_changes_only(seeded):
    sent: list[tuple[str, dict]] = []
    poller = ev.EventPoller(seeded.app, lambda e, d: sent.append((e, d)), full_every=3)

    assert await poller.poll_once() == [ev.RUN, ev.INSTANCE]
    run = sent[0][1]
    assert (run["id"], run["step"], run["loss"], run["samples"]) == ("run-1", 250, 0.123, ["s_0250.png"])
    assert sent[1][1]["instances"][0]["id"] == "77"

    # nothing changed: no run event; the instance event repeats while it bills (cost so far moves)
    sent.clear()
    assert await poller.poll_once() == [ev.INSTANCE]

    write_status(seeded.storage, step=300, loss=0.1, updated_at=NOW)
    sent.clear()
    assert await poller.poll_once() == [ev.RUN, ev.INSTANCE]
    assert (sent[0][1]["step"], sent[0][1]["loss"]) == (300, 0.1)

    # the run ends: one last event, then it is no longer polled between full scans
    write_status(seeded.storage, state=RunState.DONE, step=1000, updated_at=NOW + 1)
    seeded.state.mark_instance_destroyed("vast", "77", at=NOW)
    sent.clear()
    assert await poller.poll_once() == [ev.RUN, ev.INSTANCE]
    assert sent[0][1]["state"] == "done" and sent[0][1]["live"] is False
    assert sent[1][1] == {"instances": []}
    sent.clear()
    assert await poller.poll_once() == []


async def test_one_month_budget_crossing_is_one_event(seeded):
    """The month budget at 80 % is told once, by the guard's watchdog through the app's sink (the
    sidebar's toast, the notifiers): not again by the next round, by a second process's guard
    over the same store, nor by the event poller (an edge sends no budget event of its own).
    Past 100 % it is told once more."""
    sent: list[tuple[str, dict]] = []
    poller = ev.EventPoller(seeded.app, lambda e, d: sent.append((e, d)))
    budgets = Budgets.from_settings(seeded.settings)
    seeded.state.add_cost(Cost("50", "run-0", "charge", 39.0, NOW - 60, NOW - 60))  # 40.2 of 50

    async def rounds() -> None:
        async with seeded.app.provider("local")() as provider:
            for memory in (GuardMemory(), GuardMemory()):  # two processes: their own memory, one store
                dog = Watchdog(provider, seeded.state, budgets, clock=lambda: NOW, emit=seeded.app.emit,
                               memory=memory)
                for _ in range(2):
                    await dog.poll_once([])
                    assert ev.BUDGET not in await poller.poll_once()

    await rounds()
    told = [d for e, d in seeded.events if e == ev.BUDGET]
    assert [d["kind"] for d in told] == ["warning"]
    assert told[0]["month_usd"] == pytest.approx(40.2) and "80%" in told[0]["message"]
    assert told[0]["budget"] == "max_month_usd" and "instance_id" not in told[0]
    seeded.state.add_cost(Cost("50", "run-0", "charge", 10.0, NOW - 30, NOW - 30))
    await rounds()
    assert [d["kind"] for e, d in seeded.events if e == ev.BUDGET] == ["warning", "exceeded"]
    assert not [e for e, _ in sent if e == ev.BUDGET]


async def test_poll_forever_survives_failures(seeded):
    sent: list[str] = []
    attempts = {"n": 0}

    async def get_app():
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("settings not readable yet")
        return seeded.app

    rounds = {"n": 0}

    async def sleep(_seconds):
        rounds["n"] += 1
        if rounds["n"] == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await ev.poll_forever(get_app, lambda e, d: sent.append(e), sleep=sleep)
    assert attempts["n"] == 2  # built again after the failure, then kept
    assert sent.count(ev.RUN) == 1 and sent.count(ev.INSTANCE) == 2


def test_the_background_loop_runs_on_its_own_thread_and_starts_once():
    loop = Loop("test-loop")
    try:
        first = loop.start()
        assert loop.start() is first

        async def where():
            return threading.current_thread().name, asyncio.get_running_loop()

        name, running = loop.submit(where()).result(timeout=30)
        assert name == "test-loop" and running is first
        assert loop.run_blocking(where()) == ("test-loop", first)
        assert asyncio.run(loop.run(where())) == ("test-loop", first)  # from another loop, awaited

        async def blocking_on_itself():
            with pytest.raises(RuntimeError, match="own thread"):
                loop.run_blocking(where())  # would wait on itself for ever
            return await loop.run(where())  # on the loop: directly

        assert loop.run_blocking(blocking_on_itself()) == ("test-loop", first)
    finally:
        loop.stop()
    assert loop.thread is None and first.is_closed()
    again = loop.start()  # a later use starts it afresh
    try:
        assert again is not first and loop.run_blocking(where())[1] is again
    finally:
        loop.stop()


def test_install_registers_routes_and_streams_events(tmp_path, clean_env, monkeypatch):
    """With stand-ins for ComfyUI's ``server`` and ``folder_paths`` modules (the members the pack
    uses, nothing more), install() adds the routes and the poller broadcasts through send_sync."""
    seeded = seed(tmp_path, clean_env)
    # the guard loop gets a vast.ai URL that refuses at once: no traffic leaves this machine
    (clean_env / "config.toml").write_text(f'storage = "{seeded.storage.root}"\nvast_url = "http://127.0.0.1:9"\n')
    got = threading.Event()
    broadcasts: list[tuple[str, dict, object]] = []

    class PromptServer:
        instance = None

        def __init__(self):
            self.routes = web.RouteTableDef()

        def send_sync(self, event, data, sid=None):
            broadcasts.append((event, data, sid))
            if event == ev.RUN:
                got.set()

    PromptServer.instance = PromptServer()
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=PromptServer))
    monkeypatch.setitem(sys.modules, "folder_paths", types.SimpleNamespace(
        get_folder_paths=lambda name: [str(tmp_path / "comfy" / "models" / name)]))
    monkeypatch.setattr(routes_mod, "_installed", False)
    try:
        assert routes_mod.install() is True
        assert routes_mod.install() is True  # idempotent
        paths = {r.path for r in PromptServer.instance.routes if isinstance(r, web.RouteDef)}
        assert "/lora_cloud/api/token" in paths and "/lora_cloud/api/runs/{run_id}" in paths
        assert len([r for r in PromptServer.instance.routes if r.path == "/lora_cloud/api/token"]) == 1
        assert got.wait(60), "no run event arrived"
        event, data, sid = next(b for b in broadcasts if b[0] == ev.RUN)
        assert data["id"] == "run-1" and sid is None
    finally:
        wiring.loop.stop()
