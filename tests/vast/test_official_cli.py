"""Conformance: the official ``vastai`` 1.9.1 CLI, pointed at the fake, runs its everyday commands
with no error printed. This is what keeps the fake honest about paths, bodies and field types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.vast.conftest import API_KEY

VASTAI = Path(sys.executable).with_name("vastai")
pytestmark = pytest.mark.skipif(not VASTAI.exists(), reason="vastai CLI not installed (test extra)")


class VastCli:
    """The official CLI: one real ``vastai`` start, then its ``main()`` reused via vastai_driver."""

    def __init__(self, fake, tmp_path: Path):
        self.fake = fake
        self.env = {**os.environ, "VAST_URL": fake.url, "VASTAI_NO_UPDATE_CHECK": "1",
                    "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
                    "HOME": str(tmp_path), "COLUMNS": "200"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.vast.vastai_driver"], env=self.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def binary(self, *args: str) -> str:
        proc = subprocess.run([str(VASTAI), "--url", self.fake.url, "--api-key", API_KEY, *args], env=self.env,
                              capture_output=True, text=True, timeout=60)
        return self._check(proc.returncode, proc.stdout, proc.stderr)

    def __call__(self, *args: str, raw: bool = False) -> str:
        argv = ["--url", self.fake.url, "--api-key", API_KEY, *args] + (["--raw"] if raw else [])
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        res = json.loads(self.proc.stdout.readline())
        return self._check(res["rc"], res["out"], res["err"])

    @staticmethod
    def _check(rc: int, stdout: str, stderr: str) -> str:
        out = stdout + stderr
        assert rc == 0, out
        assert "Failed with error" not in out and "Traceback" not in out and '"error": true' not in out, out
        return stdout

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(30)


def test_everyday_commands_work_against_the_fake(live_fake, tmp_path):
    fake = live_fake
    cli = VastCli(fake, tmp_path)
    try:
        _scenario(fake, cli)
    finally:
        cli.close()


def _scenario(fake, cli: VastCli) -> None:
    offers = json.loads(cli("search", "offers", "gpu_name=RTX_4090 num_gpus=1 reliability>0.9",
                             "-o", "dph", raw=True))
    assert offers and all(o["gpu_name"] == "RTX 4090" and o["num_gpus"] == 1 for o in offers)
    assert [o["dph_total"] for o in offers] == sorted(o["dph_total"] for o in offers)
    table = cli("search", "offers", "gpu_ram>=40")
    assert "RTX_4090" not in table and "ID" in table

    created = json.loads(cli("create", "instance", str(offers[0]["id"]), "--image", "ghcr.io/x/trainer:1",
                              "--disk", "40", "--label", "lora-cloud:cli", "--env", "-e FOO=bar -p 8080:8080",
                              "--onstart-cmd", "echo started-$FOO; sleep 30", raw=True))
    iid = created["new_contract"]
    assert created["success"] is True

    deadline = time.monotonic() + 15
    while True:
        rows = json.loads(cli("show", "instances", raw=True))
        if rows and rows[0]["actual_status"] == "running" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows[0]["id"] == iid and rows[0]["actual_status"] == "running" and rows[0]["ssh_port"]
    assert rows[0]["extra_env"]["FOO"] == "bar"  # the CLI turned [[k, v]] into a dict
    assert "lora-cloud:cli" in cli("show", "instances")
    assert json.loads(cli("show", "instance", str(iid), raw=True))["label"] == "lora-cloud:cli"

    cli("label", "instance", str(iid), "renamed")
    assert fake.state.get(iid).label == "renamed"
    cli("stop", "instance", str(iid))
    assert fake.state.get(iid).actual == "stopped" and fake.state.process_of(iid) is None
    cli("start", "instance", str(iid))
    assert fake.state.get(iid).intended == "running"
    time.sleep(0.8)
    logs = cli("logs", str(iid))
    assert "started-bar" in logs

    cli("create", "ssh-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI test@host")
    keys = cli("show", "ssh-keys")
    assert "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" in keys
    cli("attach", "ssh", str(iid), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI test@host")
    assert fake.state.get(iid).ssh_keys

    user = json.loads(cli.binary("show", "user", "--raw"))
    assert 0 < user["credit"] < 100.0  # storage and GPU time were billed
    assert "api_key" not in user

    cli("destroy", "instance", str(iid), "-y")
    assert json.loads(cli("show", "instances", raw=True)) == []
    assert fake.state.get(iid) is None
