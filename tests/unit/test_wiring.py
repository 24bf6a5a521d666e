"""One composition root: the CLI, the nodes, the routes and the background loop get their services
from one :class:`App`, and run the same guard.

Two kinds of proof: the source (every edge builds or fetches its app in exactly one place), and
behaviour (the CLI's ``instances reconcile`` and ComfyUI's guard loop, run against the same fake
vast.ai server and bucket, make the same decisions, including protecting a run that is live from
another machine, which the CLI's own guard used to destroy).
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.cli.common import CliContext
from comfy_lora_cloud.cli.main import app as cli_app
from comfy_lora_cloud.comfy.events import guard_forever
from comfy_lora_cloud.comfy.wiring import AppHolder, holder
from comfy_lora_cloud.models import RunState, RunStatus
from comfy_lora_cloud.providers.base import with_bucket_tag
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage, layout
from comfy_lora_cloud.storage.identity import ensure_bucket_id
from tests.comfy.vast_helpers import KEY, launch_for, provider_factory_for
from tests.fakes.vast.server import FakeVast
from tests.fakes.vast.state import ManualClock

PKG = Path(__file__).resolve().parents[2] / "comfy_lora_cloud"


def _calls(path: Path) -> list[str]:
    """Dotted names of every call in a module (``App``, ``App.open``, ``holder.get_blocking``...)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f, parts = node.func, []
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            out.append(".".join(reversed(parts)))
    return out


def test_each_edge_builds_its_app_in_one_place():
    builders = {str(p.relative_to(PKG)): [c for c in _calls(p) if c in ("App", "App.open")]
                for edge in ("cli", "comfy") for p in (PKG / edge).rglob("*.py")}
    assert {k: v for k, v in builders.items() if v} == {"cli/common.py": ["App.open"], "comfy/wiring.py": ["App.open"]}
    # ComfyUI's nodes, routes and background loop share the process's one holder
    nodes = [c for p in sorted((PKG / "comfy" / "nodes").glob("*.py")) for c in _calls(p)]
    routes = _calls(PKG / "comfy" / "routes" / "__init__.py")
    assert "holder.get_blocking" in nodes
    assert "register_routes" in routes and "start_background" in routes
    install = next(n for n in ast.walk(ast.parse((PKG / "comfy" / "routes" / "__init__.py").read_text()))
                   if isinstance(n, ast.FunctionDef) and n.name == "install")
    args = [ast.unparse(c.args[-1]) for c in ast.walk(install) if isinstance(c, ast.Call)
            and ast.unparse(c.func) in ("register_routes", "start_background")]
    assert args == ["holder.get", "holder.get"]
    assert isinstance(holder, AppHolder)


def test_cli_context_and_comfy_holder_build_the_same_app_type(clean_env):
    cli = CliContext(home=str(clean_env))
    built = AppHolder(lambda: App.open(clean_env))
    assert type(cli.app) is type(built.get_blocking()) is App
    assert cli.app is cli.app  # one per command
    assert asyncio.run(built.get()) is built.get_blocking()  # one per ComfyUI process


@pytest.fixture
def world(tmp_path, clean_env, monkeypatch):
    """A fake vast.ai with three labelled instances: an orphan, another laptop's live run (its
    fresh status in the bucket) and an unowned instance whose run ended in the bucket long ago."""
    clock = ManualClock(start=time.time() - 600)
    fake = FakeVast(KEY, clock=clock, created_s=1.0, loading_s=5.0, workdir=tmp_path / "instances")
    url = fake.start_in_thread()
    bucket = tmp_path / "bucket"
    for k, v in {"LORA_CLOUD_STORAGE": str(bucket), "LORA_CLOUD_VAST_URL": url, "LORA_CLOUD_VAST_API_KEY": KEY}.items():
        monkeypatch.setenv(k, v)
    storage = LocalStorage(bucket)
    live = RunStatus(run_id="elsewhere", state=RunState.TRAINING, updated_at=time.time() - 30)
    storage.write_bytes(layout.run_key("elsewhere", "status.json"), json.dumps(live.to_dict()).encode())
    opener = provider_factory_for(fake)

    # the orphan is this bucket's (its id carries the bucket's): one known nowhere is only kept
    orphan = with_bucket_tag("orphan", ensure_bucket_id(storage))

    async def launch_all():
        return {name: await launch_for(opener, clock, run_id) for name, run_id in (("orphan", orphan),
                                                                                  ("elsewhere", "elsewhere"))}

    instances = asyncio.run(launch_all())
    yield fake, instances
    fake.stop()


def test_cli_reconcile_protects_a_run_live_elsewhere(world):
    fake, instances = world
    r = CliRunner().invoke(cli_app, ["--json", "instances", "reconcile", "--grace", "0"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["reconcile"]["destroyed"] == [str(instances["orphan"].id)]
    assert fake.state.get(int(instances["elsewhere"].id)) is not None  # another laptop's run goes on
    assert fake.state.get(int(instances["orphan"].id)) is None


def one_guard_round(home) -> tuple[App, list[tuple[str, dict]]]:
    """One round of ComfyUI's guard loop over an app built as ComfyUI builds it: the app, and the
    events the round sent."""
    events: list[tuple[str, dict]] = []
    app = App.open(home, emit=lambda e, d: events.append((e, d)))

    async def get_app():
        return app

    async def stop_after_one_round(_seconds):
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(guard_forever(get_app, grace_s=0.0, sleep=stop_after_one_round))
    return app, events


def test_comfy_guard_loop_makes_the_same_decisions_as_the_cli(world, clean_env):
    fake, instances = world
    one_guard_round(clean_env)
    assert fake.state.get(int(instances["elsewhere"].id)) is not None
    assert fake.state.get(int(instances["orphan"].id)) is None
    assert StateStore(Settings.load(clean_env).state_db).list_instances(include_destroyed=True)


def test_a_budget_set_from_the_cli_reaches_a_running_app(clean_env):
    """``lora-cloud budget set`` in another process: the long-lived app (ComfyUI's) sees the new
    cap on its next read, without a restart."""
    app = App.open(clean_env)
    assert app.costs.budgets().max_dph == 2.0
    r = CliRunner().invoke(cli_app, ["--home", str(clean_env), "budget", "set", "max_dph", "0.75"])
    assert r.exit_code == 0, r.output
    app.source.invalidate()  # what a second's wait does; no sleeping in tests
    assert app.costs.budgets().max_dph == 0.75


def test_a_broken_config_keeps_the_last_good_settings_and_says_so(clean_env):
    clean_env.mkdir(parents=True)
    app = App.open(clean_env)
    (clean_env / "config.toml").write_text("max_dph = [broken\n")
    app.source.invalidate()
    assert app.settings.max_dph == 2.0
    assert app.settings_problem and "config.toml" in app.settings_problem
    (clean_env / "config.toml").write_text("max_dph = 1.5\n")
    app.source.invalidate()
    assert app.settings.max_dph == 1.5 and app.settings_problem is None
