"""What one guard pass hands to its callers (:class:`GuardReport`): a typed, frozen record the CLI
reads by attribute; its ``to_dict()`` is the JSON ``lora-cloud instances reconcile --json``
prints (same keys, same order), so the record gains a field only by deciding what that shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..money import BudgetVerdict, Problem
from ..runs import RecoveryReport
from ..sessions import SessionGuardReport
from .reconcile import ReconcileReport


@dataclass(frozen=True)
class GuardReport:
    """One pass: ``ok`` is false when the instances could not be listed (then nothing else was
    checked, and ``recovery`` and ``sessions`` are None: they did not run, or stopped); ``swept``:
    a local bucket's partial files removed; ``budgets``: the watchdog's verdicts; ``problems``:
    what the pass could not do, in the order it met them."""

    ok: bool
    reconcile: ReconcileReport
    recovery: RecoveryReport | None
    swept: tuple[str, ...]
    sessions: SessionGuardReport | None
    budgets: tuple[BudgetVerdict, ...]
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        # a phase that did not run is an empty object, as the JSON always had it
        return {"ok": self.ok, "reconcile": self.reconcile.to_dict(),
                "recovery": self.recovery.to_dict() if self.recovery is not None else {},
                "swept": list(self.swept), "sessions": self.sessions.to_dict() if self.sessions is not None else {},
                "budgets": [{"level": v.level, "budget": v.budget, "instance_id": v.instance_id,
                             "message": v.message} for v in self.budgets],
                "problems": [p.to_dict() for p in self.problems]}
