"""Fixtures of the fault-injection suite: one fake vast.ai process and one GCS emulator per
session (each scenario resets the fake and gets a fresh bucket and home), and the session-end
summary computed from what the scenarios observed. The session fails when any of its three
counters is not 0, even if every row's own test passed."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.faults.harness import API_KEY, FakeControl, World, make_world
from tests.faults.registry import OBSERVED

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fake_vast_process(tmp_path_factory) -> Iterator[FakeControl]:
    """``python -m tests.fakes.vast`` on a free port; instances run from the moment they exist."""
    port = _free_port()
    log = tmp_path_factory.mktemp("fake-vast") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.vast", "--port", str(port), "--api-key", API_KEY,
             "--created-s", "0", "--loading-s", "0", "--credit", "1000000"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    control = FakeControl(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 20
    while True:
        try:
            control.call("reset")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the fake vast.ai server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
    try:
        yield control
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def fault_world_factory(fake_vast_process, gcs_env, tmp_path):
    """Builds the world for one scenario with its budgets (a fresh bucket and home each time)."""
    def build(budgets: dict) -> World:
        return make_world(fake_vast_process, gcs_env.new_bucket(), tmp_path / "home", gcs_env.url, budgets)

    return build


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if OBSERVED.scenarios:
        terminalreporter.write_sep("-", "fault injection")
        terminalreporter.write_line(OBSERVED.line())
        if OBSERVED.failures:
            terminalreporter.write_line("scenarios that broke the guarantees: " + ", ".join(OBSERVED.failures))


def pytest_sessionfinish(session, exitstatus) -> None:
    if OBSERVED.scenarios and not OBSERVED.clean and session.exitstatus == 0:
        session.exitstatus = 1
