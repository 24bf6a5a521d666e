"""Settings changed while a controller runs: the long-lived app (as ComfyUI holds it, re-reading
its files) runs the guard passes, and between them a real ``lora-cloud`` process changes or breaks
the settings. Counted in the fault-injection summary like every other row.

- a budget set from the CLI applies on the next round, without a restart;
- ``0`` switches a $ limit off at run time as it does at start;
- a NaN budget is refused by the CLI and the guard keeps the one in force;
- a broken config.toml keeps the last good settings, reports it, and enforcement goes on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import tomli_w

from comfy_lora_cloud.service.app import App, SettingsSource
from tests.faults.harness import API_KEY, World, account, entry_point
from tests.faults.registry import DEFAULT_BUDGETS
from tests.faults.scenarios_guard import PRICEY, orphan, ours

SETTINGS_ENV = ("LORA_CLOUD_MAX_DPH", "LORA_CLOUD_MAX_RUN_USD", "LORA_CLOUD_MAX_MONTH_USD", "LORA_CLOUD_MAX_RUN_HOURS")


def cli(world: World, *args: str) -> subprocess.CompletedProcess:
    """The user's shell, in its own process, on the same home (budgets from the files, not the env)."""
    env = {k: v for k, v in world.env.items() if k not in SETTINGS_ENV}
    return subprocess.run(entry_point() + ["--home", str(world.home), *args], capture_output=True, text=True,
                          env=env, timeout=120)


@dataclass
class Row:
    name: str
    setup: Callable[[World], dict[str, Any]]  # -> facts the checks use
    between: Callable[[World, dict[str, Any]], None]  # after pass 1
    check: Callable[[World, dict[str, Any], list[dict[str, Any]]], None]
    budgets: dict[str, float] | None = None


def _pricey_run(w: World) -> dict[str, Any]:
    iid = w.instance("pricey", "die", "above the max_dph the user sets while it runs", gpu=PRICEY)
    w.local_run("pricey", iid)
    w.status("pricey")
    w.may_change |= {"runs/pricey/status.json", "runs/pricey/events.jsonl"}
    return {"pricey": iid}


def _budget_set(w: World, facts: dict[str, Any]) -> None:
    r = cli(w, "--json", "budget", "set", "max_dph", "1.0")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["max_dph"] == 1.0


def _pricey_went_in_pass_2(w: World, facts: dict[str, Any], results: list[dict[str, Any]]) -> None:
    first, second = results
    assert not [v for v in first.budgets if v.level == "breach"], first.budgets
    assert any(v.budget == "max_dph" and v.level == "breach" for v in second.budgets), second


def _kept_pricey(w: World) -> dict[str, Any]:
    iid = w.instance("pricey", "keep", "max_dph switched off with 0 at run time", gpu=PRICEY)
    w.local_run("pricey", iid)
    w.status("pricey")
    return {"pricey": iid}


def _budget_off(w: World, facts: dict[str, Any]) -> None:
    r = cli(w, "--json", "budget", "set", "max_dph", "0")
    assert r.returncode == 0, r.stderr


def _no_dph_breach(w: World, facts: dict[str, Any], results: list[dict[str, Any]]) -> None:
    assert all(v.budget != "max_dph" for r in results for v in r.budgets), results


def _budget_nan(w: World, facts: dict[str, Any]) -> None:
    for bad in ("nan", "inf", "1e309", "-1"):
        r = cli(w, "budget", "set", "max_dph", bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (bad, r.stderr)


def _cap_stayed(w: World, facts: dict[str, Any], results: list[dict[str, Any]]) -> None:
    assert any(v.budget == "max_dph" and v.level == "breach" for v in results[0].budgets), results[0]
    import tomllib

    assert tomllib.loads((w.home / "config.toml").read_text())["max_dph"] == 1.0


def _broken_config(w: World, facts: dict[str, Any]) -> None:
    with (w.home / "config.toml").open("a") as f:
        f.write("max_dph = [this is not toml\n")
    facts["orphan"] = orphan(w, "born-after-the-break")


def _kept_enforcing(w: World, facts: dict[str, Any], results: list[dict[str, Any]]) -> None:
    second = results[1]
    assert facts["orphan"] in second.reconcile.destroyed, second
    assert any(p.kind == "settings" or "last good settings" in p.message for p in second.problems), second.problems


ROWS = [
    Row("budget_set_from_the_cli_applies_next_round", _pricey_run, _budget_set, _pricey_went_in_pass_2),
    # were 0 a "$0 cap", the second pass would destroy the instance
    Row("budget_zero_switches_a_limit_off_at_run_time", _kept_pricey, _budget_off, _no_dph_breach),
    Row("budget_nan_refused_and_the_cap_in_force_stays", _pricey_run, _budget_nan, _cap_stayed,
        budgets={"max_dph": 1.0}),
    Row("broken_config_keeps_the_last_good_settings", lambda w: {"ours": ours(w, "steady")}, _broken_config,
        _kept_enforcing),
]


def _long_lived_app(world: World, budgets: dict[str, float]) -> App:
    """The app as ComfyUI holds it: settings from the home's files, re-read on every access."""
    world.home.mkdir(parents=True, exist_ok=True)
    config = {"storage": world.env["LORA_CLOUD_STORAGE"], "vast_url": world.env["LORA_CLOUD_VAST_URL"],
              **{k: float(v) for k, v in {**DEFAULT_BUDGETS, **budgets}.items()}}
    (world.home / "config.toml").write_text(tomli_w.dumps(config))
    (world.home / "secrets.toml").write_text(tomli_w.dumps({"vast_api_key": API_KEY}))
    (world.home / "secrets.toml").chmod(0o600)
    return App(SettingsSource(world.home, check_every=0.0))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_settings_changed_at_run_time(row: Row, fault_world_factory, monkeypatch):
    world = fault_world_factory({})
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", world.env["STORAGE_EMULATOR_HOST"])
    app = _long_lived_app(world, row.budgets or {})
    facts = row.setup(world)
    before = world.snapshot()
    results = [asyncio.run(app.guard_pass(grace_s=0.0))]
    row.between(world, facts)
    results.append(asyncio.run(app.guard_pass(grace_s=0.0)))
    billing, destroyed, lost = account(world, before, row.name)
    assert not billing and not destroyed and not lost, (billing, destroyed, lost, results)
    row.check(world, facts, results)
