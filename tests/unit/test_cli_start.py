"""`lora-cloud --help` starts quickly because the CLI's main module imports no heavy package:
settings (pydantic-settings), rich, the GCS client, aiohttp and the services are imported by the
commands that use them. Checked by what a fresh interpreter has in ``sys.modules``,
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


def _run(argv: list[str]) -> str:
    return ("import sys\nfrom comfy_lora_cloud.cli.main import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n")


def _nouns_imported(mods: list[str]) -> list[str]:
    from comfy_lora_cloud.cli.main import NOUNS

    return sorted(name for name, (module, _) in NOUNS.items() if f"comfy_lora_cloud.cli.{module}" in mods)


def test_help_renders_every_command_without_heavy_imports():
    mods = _imported_after(_run(["--help"]))
    assert _heavy(mods) == []
    assert _nouns_imported(mods) == []  # listed from cli/main.py's table, no noun module imported


def test_a_command_imports_its_noun_alone(tmp_path):
    mods = _imported_after(f"import os\nos.environ['LORA_CLOUD_HOME'] = {str(tmp_path)!r}\n" + _run(["dataset", "list"]))
    assert _nouns_imported(mods) == ["dataset"]
    # a listing needs no HTTP client of ComfyUI's (aiohttp, 0.1 s of the start): only what queues does
    assert not [m for m in mods if m == "aiohttp" or m.startswith(("aiohttp.", "comfy_lora_cloud.remote"))]
    mods = _imported_after(_run(["train", "--help"]))
    assert _nouns_imported(mods) == ["train"]


def test_every_noun_has_its_help_from_the_table_and_a_typo_is_still_suggested():
    """The table in cli/main.py is the one home of a noun's help: no module carries its own, and
    `<noun> --help` shows the table's."""
    import importlib

    from typer.testing import CliRunner

    from comfy_lora_cloud.cli.main import NOUNS, app

    runner = CliRunner()
    listing = runner.invoke(app, ["--help"]).output
    for name, (module, text) in NOUNS.items():
        assert not importlib.import_module(f"comfy_lora_cloud.cli.{module}").app.info.help, module
        assert f"  {name} " in listing
        shown = runner.invoke(app, [name, "--help"])
        assert shown.exit_code == 0, (name, shown.output)
        assert " ".join(text.split()[:4]) in " ".join(shown.output.split()), name
    out = subprocess.run([sys.executable, "-m", "comfy_lora_cloud.cli.main", "datset", "list"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert out.returncode == 2 and "Did you mean 'dataset'?" in out.stderr


def test_a_command_still_gets_its_imports(tmp_path):
    """The deferred imports happen: `dataset list` works and has built the app (settings, storage)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_CLOUD_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "comfy_lora_cloud.cli.main", "--json", "dataset", "list"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
