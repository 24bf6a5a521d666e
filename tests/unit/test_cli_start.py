"""`lora-cloud --help` starts quickly because the CLI's main module imports no heavy package:
settings (pydantic-settings), rich, the GCS client, aiohttp and the services are imported by the
commands that use them (issue 17). Checked by what a fresh interpreter has in ``sys.modules``,
not by a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("rich", "pydantic", "pydantic_settings", "google", "aiohttp", "httpx", "PIL", "numpy", "asyncssh",
         "comfy_lora_cloud.service", "comfy_lora_cloud.settings", "comfy_lora_cloud.storage")


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _heavy(mods: list[str]) -> list[str]:
    return [m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_importing_the_cli_imports_nothing_heavy():
    assert _heavy(_imported_after("import comfy_lora_cloud.cli.main")) == []


def test_help_renders_every_command_without_heavy_imports():
    code = ("import sys\nfrom comfy_lora_cloud.cli.main import app\nsys.argv = ['lora-cloud', '--help']\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n")
    mods = _imported_after(code)
    assert _heavy(mods) == []


def test_a_command_still_gets_its_imports(tmp_path):
    """The deferred imports happen: `dataset list` works and has built the app (settings, storage)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_CLOUD_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "comfy_lora_cloud.cli.main", "--json", "dataset", "list"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
