"""Every row of the fault-injection table (tests/faults/registry.py) against the real parts:
the fake vast.ai process, the GCS emulator and the controller CLI as its own process."""

from __future__ import annotations

import pytest

from tests.faults.harness import run_scenario
from tests.faults.registry import Scenario, load_all


@pytest.mark.parametrize("sc", load_all(), ids=lambda sc: sc.name)
def test_fault_scenario(sc: Scenario, fault_world_factory) -> None:
    run_scenario(sc, fault_world_factory(sc.budgets))
