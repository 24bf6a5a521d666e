"""`lora-cloud offers|instances|costs|budget` against the standalone fake (``python -m tests.fakes.vast``)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfy_lora_cloud.cli.main import app
from comfy_lora_cloud.providers.vast import VastClient

KEY = "standalone-key-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def standalone(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.vast", "--host", "127.0.0.1", "--port", str(port),
                             "--api-key", KEY, "--loading-s", "0.2", "--created-s", "0.1"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert line.strip() == f"listening on http://127.0.0.1:{port}", line
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def cli_env(standalone, tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_CLOUD_VAST_URL", standalone)
    monkeypatch.setenv("LORA_CLOUD_VAST_API_KEY", KEY)
    return {**os.environ}


def _invoke_raw(*args: str):
    return CliRunner().invoke(app, list(args))


def _invoke(*args: str):
    res = _invoke_raw(*args)
    assert res.exit_code == 0, res.output
    return res.output


async def _launch(url: str, label: str) -> int:
    async with VastClient(url, KEY) as c:
        offer = (await c.search_offers({"gpu_name": {"eq": "RTX 4090"}, "rentable": {"eq": True}, "order": [["dph_total", "asc"]], "limit": 1}))[0]
        iid = (await c.create_instance(offer["id"], image="i", label=label, disk_gb=20, onstart="echo hi"))["new_contract"]
        for _ in range(100):
            if (await c.get_instance(iid))["actual_status"] == "running":
                break
            await asyncio.sleep(0.05)
        return iid


def test_instances_and_costs_json_via_the_entry_point(cli_env, standalone):
    iid = asyncio.run(_launch(standalone, "lora-cloud:cli-run"))
    asyncio.run(_launch(standalone, "not-ours"))
    exe = Path(sys.executable).with_name("lora-cloud")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "comfy_lora_cloud.cli.main"]
    out = subprocess.run(cmd + ["--json", "instances", "list"], env=cli_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["id"], r["run_id"], r["state"]) for r in rows] == [(str(iid), "cli-run", "running")]
    assert KEY not in out.stdout + out.stderr
    time.sleep(0.3)
    out = subprocess.run(cmd + ["--json", "costs"], env=cli_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    costs = json.loads(out.stdout)
    assert costs["per_run_usd"]["cli-run"] > 0 and costs["reconciled_with_charges"] is True
    assert 0 < costs["credit_usd"] < 100 and costs["budgets"]["max_month_usd"] == 50.0


def test_offers_logs_stop_destroy_and_budget(cli_env, standalone):
    iid = asyncio.run(_launch(standalone, "lora-cloud:r2"))
    picked = json.loads(_invoke("--json", "offers", "--for", "style", "--resolution", "512"))
    assert picked["job"]["preset"] == "style" and picked["best"]["expected_usd"] <= picked["cheapest_dph"]["expected_usd"]
    human = _invoke("offers", "--for", "character")
    assert "picked offer" in human and "expected $" in human
    assert "container started" in json.loads(_invoke("--json", "instances", "logs", str(iid)))["logs"]
    assert json.loads(_invoke("--json", "instances", "stop", str(iid)))["state"] == "stopped"
    refused = _invoke_raw("--json", "instances", "destroy", str(iid))
    assert refused.exit_code == 2 and "--yes" in refused.output  # a script must say so explicitly
    assert json.loads(_invoke("--json", "instances", "destroy", str(iid), "--yes"))["destroyed"] is True
    assert json.loads(_invoke("--json", "instances", "list")) == []

    assert json.loads(_invoke("--json", "budget", "show"))["max_dph"] == 2.0
    assert json.loads(_invoke("--json", "budget", "set", "max_dph", "0.75"))["max_dph"] == 0.75
    assert json.loads(_invoke("--json", "budget", "show"))["max_dph"] == 0.75
    bad = CliRunner().invoke(app, ["budget", "set", "max_gpus", "3"])
    assert bad.exit_code == 2


def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("LORA_CLOUD_VAST_API_KEY", raising=False)
    res = CliRunner().invoke(app, ["instances", "list"])
    assert res.exit_code == 2 and "vast_api_key" in res.output
