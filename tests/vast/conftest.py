"""Fixtures: a fake vast.ai server on 127.0.0.1, served from its own thread."""

from __future__ import annotations

import pytest

from tests.fakes.vast.server import FakeVast
from tests.fakes.vast.state import ManualClock

API_KEY = "vast-test-key-abcdef0123456789"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock, tmp_path):
    """A fake whose timeline moves only when the test advances ``clock``."""
    fv = FakeVast(API_KEY, clock=clock, created_s=1.0, loading_s=30.0, workdir=tmp_path / "instances")
    fv.start_in_thread()
    yield fv
    fv.stop()


@pytest.fixture
def live_fake(tmp_path):
    """A fake on real time with a short timeline (for subprocess clients such as the vastai CLI)."""
    fv = FakeVast(API_KEY, created_s=0.1, loading_s=0.3, run_processes=True, workdir=tmp_path / "instances")
    fv.start_in_thread()
    yield fv
    fv.stop()
