"""Budgets: max $/hr per instance, max $ per run, max $ per calendar month, max hours per run.

A remote ComfyUI session's instance is held to the $/hr and month budgets like any other, but
not to ``max_run_hours``: a session has hours of its own (``comfy start --max-hours``, default the
``session_max_hours`` setting), enforced by its image and by ``SessionGuard`` (service/sessions/guard.py).

:func:`check_launch` refuses a launch that would break one up front (BudgetExceeded);
:func:`evaluate` turns the current spend into verdicts for the watchdog: ``warn`` at
:data:`WARN_AT` of a limit, ``breach`` at the limit (the watchdog then destroys the instance).
The month budget is also told as a whole (:func:`month_level`, :func:`month_news`): the watchdog
sends it once per crossing, whatever the instances, and no edge sends its own.

A limit is a finite number. ``0`` means the same everywhere (here, the offer picker in
``providers/pricing.py`` and the launch path): that $ limit is off. Hours must be at least a
minute (``MIN_HOURS``): there is no "run forever", and no limit shorter than a guard round.
:class:`Budgets` refuses anything else, whoever builds it.

A run may carry its own ``max_run_usd`` (``train start``'s request, the Launch node's
``max_usd``; kept in its record's spec): it replaces the setting for that run, in the watchdog
(:func:`evaluate`'s ``run_limits``) and in the recovery's move check alike (:func:`run_limit`).

Whose limits hold a run depends on the home (``service/guard/watchdog.py``): the one that launched it
holds it to its current settings; every other home to the limits the run was launched under
(``runs/<id>/spec.json``, ``training/spec.py:RunLimits``). Either way they reach
:func:`evaluate` as that run's own :class:`Budgets` in ``run_limits``; the month is each home's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from ...errors import BudgetExceeded, ConfigError
from ...models import Instance
from ...settings import MIN_HOURS

WARN_AT = 0.8
USD_LIMITS = ("max_dph", "max_run_usd", "max_month_usd")


@dataclass(frozen=True)
class Budgets:
    max_dph: float = 2.0
    max_run_usd: float = 10.0
    max_month_usd: float = 50.0
    max_run_hours: float = 6.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"budget {name} must be a finite number, not {value!r}")
            if name == "max_run_hours" and value < MIN_HOURS:
                raise ConfigError(f"budget max_run_hours must be at least a minute ({MIN_HOURS:.4f} h), not {value!r}")
            if value < 0:
                raise ConfigError(f"budget {name} must be at least 0 (0 turns a $ limit off), not {value!r}")

    @classmethod
    def from_settings(cls, settings: Any) -> "Budgets":
        return cls(float(settings.max_dph), float(settings.max_run_usd), float(settings.max_month_usd),
                   float(settings.max_run_hours))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


BUDGET_KEYS = ("max_dph", "max_run_usd", "max_month_usd", "max_run_hours")


@dataclass(frozen=True)
class Verdict:
    level: str  # "warn" | "breach"
    budget: str  # which limit: max_dph | max_run_usd | max_month_usd | max_run_hours
    instance_id: str
    run_id: str | None
    value: float
    limit: float

    @property
    def message(self) -> str:
        unit = {"max_dph": "$/hr", "max_run_hours": "h"}.get(self.budget, "$")
        what = "reached" if self.level == "breach" else f"at {self.value / self.limit:.0%} of"
        return (f"instance {self.instance_id} (run {self.run_id or '?'}) {what} {self.budget}: "
                f"{self.value:.3f} {unit} of {self.limit:g} {unit}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message}


def run_limit(spec: Any, default: float) -> float:
    """A run's max_run_usd: its own (``spec["max_run_usd"]``, a finite number >= 0; 0 is off)
    when it has one, else ``default`` (the setting)."""
    own = spec.get("max_run_usd") if isinstance(spec, dict) else None
    if isinstance(own, (int, float)) and not isinstance(own, bool) and math.isfinite(own) and own >= 0:
        return float(own)
    return float(default)


def check_launch(budgets: Budgets, dph: float, month_spent: float, expected_usd: float | None = None) -> None:
    """Refuse a launch at ``dph`` $/hr that breaks a budget before it starts."""
    if budgets.max_dph and dph > budgets.max_dph:
        raise BudgetExceeded(f"offer costs ${dph:.3f}/hr, above max_dph ${budgets.max_dph:g}/hr")
    if budgets.max_month_usd and month_spent >= budgets.max_month_usd:
        raise BudgetExceeded(f"this month's spend ${month_spent:.2f} has reached max_month_usd ${budgets.max_month_usd:g}")
    if expected_usd is not None and budgets.max_run_usd and expected_usd > budgets.max_run_usd:
        raise BudgetExceeded(f"the run is expected to cost ${expected_usd:.2f}, above max_run_usd ${budgets.max_run_usd:g}")


def _grade(budget: str, value: float, limit: float, inst: Instance) -> Verdict | None:
    if not limit:
        return None
    if value >= limit:
        return Verdict("breach", budget, str(inst.id), inst.run_id, value, limit)
    if value >= WARN_AT * limit:
        return Verdict("warn", budget, str(inst.id), inst.run_id, value, limit)
    return None


def evaluate(budgets: Budgets, instances: Iterable[Instance], *, run_usd: dict[str, float], month_usd: float | None,
             now: float, first_seen: dict[str, float] | None = None,
             run_limits: dict[str, Budgets] | None = None) -> list[Verdict]:
    """Verdicts for every instance (breaches first). ``run_usd`` maps run id -> $ spent so far
    (a run missing from it is not checked); ``month_usd`` None skips the month budget;
    ``run_limits`` maps run id -> the budgets that run is held to (its max $/hr, $ and hours;
    others: ``budgets``). The month is always ``budgets``'.

    An instance's age is ``now - first_seen[id]``, both on this controller's clock; without
    ``first_seen`` the instance's own ``created_at`` stands in (callers that have no store)."""
    out: list[Verdict] = []
    for inst in instances:
        born = first_seen.get(str(inst.id)) if first_seen is not None else (inst.created_at or None)
        own = (run_limits or {}).get(inst.run_id, budgets) if inst.run_id is not None else budgets
        checks = [("max_dph", inst.dph_total, own.max_dph)]
        if not inst.session_id:  # a session's hours are its own (module docstring)
            checks.append(("max_run_hours", max(now - born, 0.0) / 3600.0 if born is not None else 0.0,
                           own.max_run_hours))
        if month_usd is not None:
            checks.append(("max_month_usd", month_usd, budgets.max_month_usd))
        if inst.run_id is not None and inst.run_id in run_usd:
            checks.append(("max_run_usd", run_usd[inst.run_id], own.max_run_usd))
        for budget, value, limit in checks:
            if budget == "max_dph":  # a price is over or not; no 80 % warning for it
                if limit and value > limit:
                    out.append(Verdict("breach", budget, str(inst.id), inst.run_id, value, limit))
                continue
            v = _grade(budget, value, limit, inst)
            if v:
                out.append(v)
    out.sort(key=lambda v: v.level != "breach")
    return out


def month_level(month_usd: float | None, max_month_usd: float) -> str | None:
    """How far this month's spend is into the month budget: ``"exceeded"`` (at or past it),
    ``"warning"`` (from :data:`WARN_AT`), else None (also: unknown spend, or no month budget)."""
    if month_usd is None or not max_month_usd:
        return None
    if month_usd >= max_month_usd:
        return "exceeded"
    return "warning" if month_usd >= WARN_AT * max_month_usd else None


def month_news(level: str, month_usd: float, max_month_usd: float) -> dict[str, Any]:
    """The budget event for this month's spend crossing into ``level`` (the sidebar's toast and
    the notifiers' budget_80 / budget_100 read it)."""
    return {"kind": level, "month_usd": round(month_usd, 4), "max_month_usd": max_month_usd,
            "budget": "max_month_usd",
            "message": f"This month's spend ${month_usd:.2f} is {month_usd / max_month_usd:.0%} of the "
                       f"${max_month_usd:.2f} budget"}
