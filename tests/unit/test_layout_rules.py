"""The house rules of design.md, checked on the source: imports point one way, only comfy/
imports ComfyUI, requirements.txt (what ComfyUI-Manager installs) matches pyproject, and each
money and data action has one home (the rules in layout_rules.py)."""

import ast
import re
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit import layout_rules as rules

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "comfy_lora_cloud"
COMFY_MODULES = {"comfy", "comfy_api", "comfy_execution", "server", "folder_paths", "nodes", "execution"}
LAYER = {  # layer -> layers it may import (design.md: edges -> service -> adapters -> base)
    "cli": {"service", "base"},
    "comfy": {"service", "base"},
    "service": {"storage", "providers", "remote", "dataset", "training", "workflows", "base"},
    "storage": {"base"}, "providers": {"base"}, "remote": {"base"}, "dataset": {"base", "storage"},
    "training": {"base", "storage", "dataset", "providers"},
    "worker": {"base", "storage", "dataset", "training"},  # what runs on the rented GPU
    "workflows": {"base"},  # ComfyUI graphs as data (the templates)
    "base": {"base"},
}
BASE_MODULES = {"models", "errors", "settings", "__init__"}  # what "base" may mean: nothing else
# the public face of each adapter package: another package imports these modules, never the rest
ADAPTER_PUBLIC = {
    "storage": {"storage", "storage.base", "storage.layout", "storage.sync", "storage.local", "storage.identity"},
    "providers": {"providers", "providers.base", "providers.pricing", "providers.vast", "providers.local"},
    "dataset": {"dataset", "dataset.bucket", "dataset.pipeline", "dataset.validate", "dataset.load",
                "dataset.caption"},
    "training": {"training", "training.estimate", "training.kohya_config", "training.launch", "training.presets",
                 "training.progress", "training.spec", "training.status", "training.weights",
                 "training.lora_meta", "training.inference"},
}


def _layer(rel_parts: tuple[str, ...]) -> str:
    return rel_parts[0] if len(rel_parts) > 1 and rel_parts[0] in LAYER else "base"


def _imports(path: Path, pkg_parts: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if pkg_parts is None:
        pkg_parts = path.relative_to(REPO).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ((node.module,) if node.module else ()))
                out.append((mod, node.level))
            else:
                out.append((node.module or "", 0))
    return out


def test_only_comfy_package_imports_comfyui():
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        if rel[0] == "comfy":
            continue
        for mod, level in _imports(path):
            if level == 0 and mod.split(".")[0] in COMFY_MODULES:
                offenders.append(f"{path.relative_to(REPO)} imports {mod}")
    assert offenders == []


def _edge_offenders(path: Path, edge: str, pkg_parts: tuple[str, ...] | None = None) -> list[str]:
    offenders = []
    for mod, _ in _imports(path, pkg_parts):
        parts = mod.split(".")
        if parts[0] != "comfy_lora_cloud" or len(parts) < 2 or parts[1] in (edge, "service"):
            continue
        if parts[1] not in BASE_MODULES:
            offenders.append(mod)
    return offenders


def test_edges_import_only_the_service_and_the_base():
    """cli/ and comfy/ reach everything through the service: a behaviour reached from a node, a
    route, the CLI and the background loop is the same code, wired once."""
    offenders = [f"{path.relative_to(REPO)} imports {mod}"
                 for edge in ("cli", "comfy") for path in (PKG / edge).rglob("*.py")
                 for mod in _edge_offenders(path, edge)]
    assert offenders == []


def test_the_edge_rule_catches_an_adapter_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ..storage.gcs import GcsStorage\nfrom ..service.app import App\nfrom ..errors import ConfigError\n")
    assert _edge_offenders(bad, "cli", ("comfy_lora_cloud", "cli")) == ["comfy_lora_cloud.storage.gcs"]


def test_packages_use_only_each_others_public_modules():
    """An adapter imports another adapter's public modules, never its internals (a module that is
    not in ADAPTER_PUBLIC, or a private name)."""
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        here = rel[0] if len(rel) > 1 else "base"
        for mod, _ in _imports(path):
            parts = mod.split(".")
            if parts[0] != "comfy_lora_cloud" or len(parts) < 2 or parts[1] == here or parts[1] not in ADAPTER_PUBLIC:
                continue
            target = ".".join(parts[1:])
            if target not in ADAPTER_PUBLIC[parts[1]]:
                offenders.append(f"{path.relative_to(REPO)} imports {mod}")
    assert offenders == []


def test_imports_point_one_way():
    offenders = []
    for path in PKG.rglob("*.py"):
        here = _layer(path.relative_to(PKG).parts)
        for mod, _ in _imports(path):
            if not mod.startswith("comfy_lora_cloud."):
                continue
            target = _layer(tuple(mod.split(".")[1:]) + ("x",))
            if target != here and target not in LAYER[here]:
                offenders.append(f"{path.relative_to(REPO)} ({here}) imports {mod} ({target})")
    assert offenders == []


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).replace('"', "'").lower()


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower()


def test_requirements_txt_matches_pyproject():
    """What ComfyUI-Manager installs = the package's dependencies + the dataset nodes' needs,
    with the same version ranges as pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = {_name(d): d for d in project["dependencies"]}
    dataset = {_name(d): d for d in project["optional-dependencies"]["dataset"]}
    reqs = {
        _name(line): line
        for line in (l.split("#")[0].strip() for l in (REPO / "requirements.txt").read_text().splitlines())
        if line
    }
    assert set(deps) <= set(reqs), "requirements.txt lacks a dependency of pyproject.toml"
    assert set(reqs) - set(deps) <= set(dataset), "requirements.txt has a package no extra declares"
    for name, line in reqs.items():
        want = deps.get(name) or dataset[name]
        spec = lambda r: re.sub(r"\s+", "", r.split(";")[0]).replace('"', "'")
        assert spec(line) == spec(want), f"{name}: requirements.txt says {line!r}, pyproject {want!r}"


def test_no_pin_that_comfyui_pins_differently():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[<>=!~;\[ ]", dep, 1)[0].lower()
        if name in {"aiohttp", "pydantic", "pydantic-settings", "pillow", "numpy", "safetensors", "torch", "yarl"}:
            assert "==" not in dep and "<=" not in dep, f"{dep}: ComfyUI pins this itself; use a range"


def test_pack_entry_point_imports_without_comfyui():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pack_under_test", REPO / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(mod.comfy_entrypoint) and mod.WEB_DIRECTORY == "./web"
    assert (REPO / "web").is_dir()


# --- the rules that replace "the one home of ..." docstrings (tests/unit/layout_rules.py) ---------
#
# Each rule runs twice: on a small tree planted in tmp_path with the violation (and the look-alikes
# it must leave alone), and on the real tree.

# modules allowed over rules.MAX_LINES lines, each with why (path relative to the repository root:
# "why"). An entry for a module that shrank fails the test, so the list only ever shrinks.
MODULE_SIZE_ALLOWED: dict[str, str] = {}


def plant(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path under root -> source) and an empty __init__.py into every folder of
    the package that lacks one."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    for folder in [root / rules.PACKAGE, *(root / rules.PACKAGE).rglob("*")]:
        if folder.is_dir() and not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text("")
    return root


def where(found: list[rules.Violation]) -> list[str]:
    """path:line of each violation; and each one's message starts with them."""
    for v in found:
        assert str(v).startswith(f"{v.path}:{v.line}: ")
    return [f"{v.path}:{v.line}" for v in sorted(found)]


def real(check, *args) -> list[str]:
    return [str(v) for v in check(REPO, *args)]


P = rules.PACKAGE


def test_the_rules_read_the_source_and_import_nothing_of_the_package():
    """So they judge a tree that does not import, and a planted tree never touches the real one."""
    source = ast.parse((REPO / "tests" / "unit" / "layout_rules.py").read_text())
    imported = [n.module or "" for n in ast.walk(source) if isinstance(n, ast.ImportFrom)] + \
        [a.name for n in ast.walk(source) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith(rules.PACKAGE)]


# (a) import cycles

def test_an_import_cycle_is_caught_with_its_ring(tmp_path):
    root = plant(tmp_path, {
        f"{P}/service/a.py": "from . import b\n",
        f"{P}/service/b.py": """
            def later():
                from .c import C  # inside a function: still a cycle
                return C
            """,
        f"{P}/service/c.py": "import comfy_lora_cloud.service.a\nC = 1\n",
        # a type-only import back is how a lower module names what is passed in: no cycle
        f"{P}/service/d.py": "from .e import E\n",
        f"{P}/service/e.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from .d import D
            E = 1
            """,
    })
    found = rules.check_import_cycles(root)
    assert where(found) == [f"{P}/service/a.py:1"]
    assert "comfy_lora_cloud.service.a -> comfy_lora_cloud.service.b -> comfy_lora_cloud.service.c -> " \
           "comfy_lora_cloud.service.a" in found[0].message
    assert f"{P}/service/b.py:2 imports comfy_lora_cloud.service.c" in found[0].message


def test_service_packages_importing_each_other_are_caught(tmp_path):
    """No module imports itself back, but home and money need each other: not layered."""
    root = plant(tmp_path, {
        f"{P}/service/home/state.py": "def f():\n    from ..money import Budgets\n",
        f"{P}/service/money/__init__.py": "from .budgets import Budgets\n",
        f"{P}/service/money/budgets.py": "from ..home import limits\nclass Budgets: ...\n",
        f"{P}/service/home/limits.py": "X = 1\n",
    })
    assert rules.check_import_cycles(root) == []
    found = rules.check_service_package_cycles(root)
    assert where(found) == [f"{P}/service/home/state.py:2"]
    assert "comfy_lora_cloud.service.home -> comfy_lora_cloud.service.money -> comfy_lora_cloud.service.home" \
        in found[0].message


def test_no_import_cycle_in_the_package():
    assert real(rules.check_import_cycles) == []


def test_the_service_packages_are_layered():
    assert real(rules.check_service_package_cycles) == []


# (b) public faces

def test_reaching_into_another_service_package_is_caught(tmp_path):
    root = plant(tmp_path, {
        f"{P}/service/money/__init__.py": "from .costs import Costs\n",
        f"{P}/service/money/costs.py": "class Costs: ...\n",
        f"{P}/service/money/budgets.py": "X = 1\n",
        f"{P}/service/runs/launch.py": "X = 1\n",
        f"{P}/service/events.py": "RUN_EVENT = 'lora_cloud.run'\n",
        f"{P}/service/runs/control.py": """
            from ..money.costs import Costs
            from ..money import Costs as Fine
            import comfy_lora_cloud.service.money.budgets
            from comfy_lora_cloud.service.money import budgets
            from .launch import X
            from ..events import RUN_EVENT
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from comfy_lora_cloud.service.money.costs import Costs as Typed
            """,
        f"{P}/cli/train.py": "from ..service.runs.control import Runs\nfrom ..service.runs import Runs\n",
        f"{P}/comfy/wiring.py": "def f():\n    from comfy_lora_cloud.service.money import costs\n",
    })
    found = rules.check_public_faces(root)
    assert where(found) == [f"{P}/cli/train.py:1", f"{P}/comfy/wiring.py:2", f"{P}/service/runs/control.py:1",
                            f"{P}/service/runs/control.py:3", f"{P}/service/runs/control.py:4",
                            f"{P}/service/runs/control.py:9"]
    assert "comfy_lora_cloud.service.money.costs" in found[2].message


def test_service_packages_meet_through_their_public_faces():
    assert real(rules.check_public_faces) == []


# (c) one destroy

def test_a_destroy_outside_the_destroy_home_is_caught(tmp_path):
    root = plant(tmp_path, {
        f"{P}/service/guard/reconcile.py": '''
            """Calls provider.destroy(iid) for an orphan."""
            from ..money import destroy_instance as settle
            async def orphan(self, iid):
                await self.provider.destroy(iid)
                # provider.destroy(iid) was here
                await self.instances.destroy(iid)  # the service's door, which hands over to the home
                await settle(iid)
                destroy_instance(iid)
            def destroy(self):  # a method of that name is no call
                pass
            ''',
        f"{P}/service/money/destroy.py": "async def destroy_instance(p, i):\n    await p.destroy(i)\n",
        f"{P}/service/money/__init__.py": "from .destroy import destroy_instance\n",
        f"{P}/providers/vast.py": "async def destroy(self, i):\n    await self.client.destroy(i)\n",
        f"{P}/worker/inference.py": "def end(self):\n    self.destroy()  # the instance destroying itself\n",
        f"{P}/cli/instances.py": "def destroy(ctx, iid):\n    run(ctx_obj(ctx).app.instances.destroy(iid))\n",
        f"{P}/comfy/routes.py": "async def h(r, app):\n    await (await app.get()).provider().destroy(1)\n",
    })
    found = rules.check_destroy_calls(root)
    assert where(found) == [f"{P}/comfy/routes.py:2", f"{P}/service/guard/reconcile.py:4",
                            f"{P}/service/guard/reconcile.py:8"]
    assert "self.provider.destroy" in found[1].message


def test_only_the_destroy_home_destroys_an_instance():
    assert real(rules.check_destroy_calls) == []


# (d) one end of a run

def test_a_terminal_state_written_outside_the_lifecycle_home_is_caught(tmp_path):
    root = plant(tmp_path, {
        f"{P}/service/guard/watchdog.py": '''
            """Ends a run: state.update_run(rid, state=RunState.FAILED) -- prose, not a write."""
            import asyncio
            from ...models import Run, RunState, SessionState
            from ..runs.lifecycle import end_run
            FAILED_STATES = (RunState.FAILED.value, RunState.LOST.value)
            async def enforce(self, state, storage, rid, run, session, tunnel, conn, m):
                state.update_run(rid, state=RunState.FAILED)
                await asyncio.to_thread(self.state.update_run, rid, state=RunState.LOST, error=m)
                end_run_in_bucket(storage, rid, RunState.FAILED, m)
                state.update_run(rid, state="done")
                run.state = RunState.STOPPED
                state.put_run(Run(id=rid, state=RunState.DONE))
                await asyncio.to_thread(StatusReporter(storage, rid).update, state=RunState.TIMED_OUT)
                conn.execute("UPDATE runs SET state=? WHERE id=?", (RunState.FAILED.value, rid))
                # state.update_run(rid, state=RunState.FAILED)
                if run.state is RunState.DONE or run.state in (RunState.FAILED, RunState.LOST):
                    pass
                state.update_run(rid, state=RunState.TRAINING)
                end_run(state, storage, rid, RunState.FAILED, m)  # the home itself
                session.state = SessionState.FAILED
                tunnel.state = "failed"
                conn.execute("SELECT * FROM runs WHERE state=?", (RunState.DONE.value,))
                name = rid.replace("-", "_")
                ended = replace(run, state=RunState("failed"))
                status["state"] = RunState.LOST.value
                body = {"state": RunState.FAILED.value, "message": m}
                return state.list_runs(state=RunState.DONE)
            ''',
        f"{P}/service/runs/lifecycle.py": "def end_run(state, storage, rid, end, m):\n"
                                          "    end_run_in_bucket(storage, rid, end, m)\n"
                                          "    state.update_run(rid, state=RunState.FAILED)\n",
        f"{P}/training/status.py": "def f(r):\n    r.update(state=RunState.DONE)\n",
        f"{P}/worker/trainer.py": "def f(r):\n    r.update(state=RunState.FAILED)\n",
    })
    found = rules.check_terminal_writes(root)
    assert where(found) == [f"{P}/service/guard/watchdog.py:{n}" for n in (7, 8, 9, 10, 11, 12, 13, 14, 24, 25, 26)]
    assert "FAILED" in found[0].message and "lifecycle.py" in found[0].message


def test_only_the_lifecycle_home_ends_a_run():
    assert real(rules.check_terminal_writes) == []


# (e) event names

def test_an_event_name_outside_the_events_module_is_caught(tmp_path):
    root = plant(tmp_path, {
        f"{P}/service/events.py": 'RUN_EVENT = "lora_cloud.run"\n',
        f"{P}/service/notify/notifier.py": '''
            """Sends ``lora_cloud.notify`` events (prose)."""
            import logging
            from ..events import RUN_EVENT
            NOTIFY_EVENT = "lora_cloud.notify"  # the toast channel
            ALIAS_EVENT = RUN_EVENT
            log = logging.getLogger("comfy_lora_cloud.notify")
            SAVED = "lora_cloud.json"  # a file name
            def f(emit):
                # emit("lora_cloud.run", {}) was here
                emit(RUN_EVENT, {})
                emit("lora_cloud.toast", {"kind": "x"})
            ''',
    })
    found = rules.check_event_names(root)
    assert where(found) == [f"{P}/service/notify/notifier.py:4", f"{P}/service/notify/notifier.py:11"]
    assert "NOTIFY_EVENT" in found[0].message and "'lora_cloud.toast'" in found[1].message


def test_every_event_name_is_defined_in_the_events_module():
    assert real(rules.check_event_names) == []


# (f) the settings files

def test_a_settings_file_written_outside_its_module_is_caught(tmp_path):
    root = plant(tmp_path, {
        f"{P}/service/money/costs.py": '''
            import os, shutil
            from ...settings import CONFIG_FILE, LAST_GOOD_DIR, set_value
            def save(home, data, raw):
                (home / "config.toml").write_text(data)
                path = home / CONFIG_FILE
                tmp = path.with_suffix(".tmp")
                os.replace(tmp, path)
                with open(home / "secrets.toml", "w") as f:
                    f.write(data)
                with open(home / "config.toml") as f:  # reading is fine
                    f.read()
                set_value(home, "max_dph", "2")  # the writer's own door
                shown = str(home / "config.toml")
                _keep(home / ".last-good" / "config.toml", raw)
                _keep(home / "notes.txt", raw)
                (home / "secrets.toml").rename(home / "secrets.toml.damaged")
                shutil.copy(raw, home / LAST_GOOD_DIR / "config.toml")
                shutil.copy(home / "config.toml", home / "backup.toml")  # copying one out is reading it
            def _keep(target, raw):
                target.write_bytes(raw)
            ''',
        f"{P}/settings.py": "def set_value(home, k, v):\n    (home / 'config.toml').write_text(v)\n",
        f"{P}/settings/files.py": "def write(home, v):\n    (home / 'secrets.toml').write_text(v)\n",
    })
    found = rules.check_settings_writes(root)
    assert where(found) == [f"{P}/service/money/costs.py:{n}" for n in (4, 7, 8, 14, 16, 17)]


def test_settings_files_are_written_by_the_settings_module_only():
    assert real(rules.check_settings_writes) == []


# (g) module sizes

def test_a_module_over_the_limit_is_caught_unless_allowed(tmp_path):
    def lines(n: int) -> str:
        return "x = 1\n" * n

    root = plant(tmp_path, {f"{P}/big.py": lines(501), f"{P}/fits.py": lines(500), f"{P}/named.py": lines(600),
                            f"{P}/shrank.py": lines(20)})
    found = rules.check_module_sizes(root, {f"{P}/named.py": "why", f"{P}/shrank.py": "why", f"{P}/gone.py": "why"})
    assert where(found) == [f"{P}/big.py:501", f"{P}/gone.py:1", f"{P}/shrank.py:1"]


def test_no_module_over_the_limit():
    assert real(rules.check_module_sizes, MODULE_SIZE_ALLOWED) == []


# (h) one background event loop per process

def test_a_second_background_loop_is_caught(tmp_path):
    root = plant(tmp_path, {
        f"{P}/service/sessions/tunnels.py": '''
            import asyncio, threading
            class TunnelLoop:
                def start(self):
                    loop = asyncio.new_event_loop()
                    def main():
                        asyncio.set_event_loop(loop)
                        loop.run_forever()
                    threading.Thread(target=main, daemon=True).start()
            ''',
        f"{P}/comfy/pollers.py": '''
            import asyncio, functools, threading
            from asyncio import run as arun
            from concurrent.futures import ThreadPoolExecutor
            class Pollers(threading.Thread):
                def run(self):
                    arun(self.forever())
                def start_all(self, pool, coro):
                    threading.Thread(target=lambda: asyncio.run(self.forever()), daemon=True).start()
                    threading.Thread(None, self._serve).start()
                    threading.Thread(target=functools.partial(asyncio.run, coro)).start()
                    pool.submit(asyncio.run, coro)
                    threading.Thread(target=self._flush, name="not-a-loop").start()
                    return pool.submit(asyncio.run, coro).result()  # waited on: ends with the call
                async def hop(self, coro):
                    await asyncio.to_thread(asyncio.run, coro)  # awaited: ends with the call
                def _serve(self):
                    asyncio.run(self.forever())
                def _flush(self):
                    pass
                def once(self):
                    return asyncio.run(self.forever())  # the caller's own thread, for one call
            ''',
        # the one loop's home, and the processes of their own
        f"{P}/service/loop.py": '''
            import asyncio, threading
            def start():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, daemon=True).start()
            ''',
        f"{P}/cli/comfy.py": "import asyncio, threading\nthreading.Thread(target=lambda: asyncio.run(x())).start()\n",
        f"{P}/worker/inference.py": "import asyncio\nloop = asyncio.new_event_loop()\n",
    })
    found = rules.check_background_loops(root)
    assert where(found) == [f"{P}/comfy/pollers.py:{n}" for n in (5, 8, 9, 10, 11)] + \
        [f"{P}/service/sessions/tunnels.py:{n}" for n in (4, 8)]
    assert "asyncio.new_event_loop" in found[-2].message and "main, which calls loop.run_forever" in found[-1].message
    assert all(rules.LOOP_HOME in v.message for v in found)


def test_one_background_loop_per_process():
    assert real(rules.check_background_loops) == []
