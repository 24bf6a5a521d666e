"""The fault-injection table: one :class:`Scenario` per row, in :data:`SCENARIOS`.

A scenario module (``tests/faults/scenarios_*.py``) builds rows with :func:`scenario` (which
appends them); ``tests/faults/test_faults.py`` runs every row through one parametrized test, and
the session ends with one line computed from :data:`OBSERVED`::

    fault-injection: N scenarios, 0 instances left billing past budget or unowned,
    0 live runs wrongly destroyed, 0 objects lost

A row says what to break (``setup`` gets a :class:`~tests.faults.harness.World`: the fake vast.ai
process, the emulator bucket, the state store, the controller CLI), how many guard passes to run,
and what must follow (``check``). Every instance a setup creates declares its fate (``keep`` or
``die``) and every object in the bucket is snapshotted, so the three counters come from what
the scenario observed, not from what it asserts.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .harness import World

Setup = Callable[["World"], None]
Check = Callable[["World", list[dict[str, Any]]], None]

# generous budgets: a scenario that means to breach one lowers it
DEFAULT_BUDGETS = {"max_dph": 20.0, "max_run_usd": 1000.0, "max_month_usd": 10000.0, "max_run_hours": 6.0}


@dataclass
class Scenario:
    name: str
    why: str  # the attack or fault, in one line
    setup: Setup
    check: Check | None = None  # (world, one guard result per pass) -> asserts
    passes: int = 1  # guard passes (``lora-cloud instances reconcile``), each a real process
    grace_s: float = 0.0
    expect_exit: int = 0  # of every pass
    budgets: dict[str, Any] = field(default_factory=dict)  # over DEFAULT_BUDGETS, as env values
    env: dict[str, str] = field(default_factory=dict)  # more environment for the passes
    between: Setup | None = None  # after each pass but the last (heal a fault, say)
    clock_ahead_s: float = 0.0  # the passes run on a clock this far ahead of the bucket's (faketime)


@dataclass
class Observed:
    """What the scenarios saw, summed over the session."""

    scenarios: int = 0
    billing_unowned_or_over_budget: int = 0  # instances declared "die" still alive after the passes
    live_runs_destroyed: int = 0  # instances declared "keep" that were destroyed
    objects_lost: int = 0  # bucket objects gone or changed that the scenario did not allow to change
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"fault-injection: {self.scenarios} scenarios, {self.billing_unowned_or_over_budget} instances "
                f"left billing past budget or unowned, {self.live_runs_destroyed} live runs wrongly destroyed, "
                f"{self.objects_lost} objects lost")

    @property
    def clean(self) -> bool:
        return not (self.billing_unowned_or_over_budget or self.live_runs_destroyed or self.objects_lost)


SCENARIOS: list[Scenario] = []
OBSERVED = Observed()


def scenario(name: str, why: str, **kwargs: Any) -> Callable[[Setup], Setup]:
    """Decorator: register the decorated setup function as a scenario row."""
    def register(setup: Setup) -> Setup:
        if any(s.name == name for s in SCENARIOS):
            raise ValueError(f"two fault scenarios are named {name!r}")
        SCENARIOS.append(Scenario(name=name, why=why, setup=setup, **kwargs))
        return setup

    return register


def load_all() -> list[Scenario]:
    """Import every ``scenarios_*.py`` next to this file (each appends its rows) and return the table."""
    here = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("scenarios_"):
            importlib.import_module(f"tests.faults.{info.name}")
    return list(SCENARIOS)
