import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "tiny_dataset"


def _entry_point() -> list[str]:
    exe = Path(sys.executable).parent / "lora-cloud"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "comfy_lora_cloud.cli.main"]


class Cli:
    """Runs `lora-cloud` through its installed entry point in a subprocess."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def __call__(self, *args: str, input: str | None = None, check: int | None = 0, **env: str):
        proc = subprocess.run(
            _entry_point() + list(args), input=input, capture_output=True, text=True,
            env={**self.env, **env}, timeout=120,
        )
        if check is not None:
            assert proc.returncode == check, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
        return proc

    def json(self, *args: str, **env: str):
        return json.loads(self("--json", *args, **env).stdout)


@pytest.fixture
def cli(clean_env) -> Cli:
    env = {k: v for k, v in os.environ.items()}
    env["LORA_CLOUD_HOME"] = str(clean_env)
    env["COLUMNS"] = "200"
    return Cli(env)


@pytest.fixture
def tiny() -> Path:
    return TINY
