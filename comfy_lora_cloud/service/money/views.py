"""What the money nouns hand to the edges: typed, frozen records, read by attribute in the CLI
and serialised by the routes with ``to_dict()``. Each ``to_dict()`` is the JSON the sidebar and
the ``--json`` output read (same keys, same order, null where a value is unknown), so a record
can gain a field only by deciding what the sidebar sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .budgets import Budgets

BILLING_STATES = ("running", "loading", "creating")  # the states in which an instance's GPU bills


@dataclass(frozen=True)
class InstanceView:
    """One instance this controller created, with its uptime and what it has cost so far."""

    id: str
    provider: str
    label: str
    run_id: str | None
    state: str
    gpu_name: str
    num_gpus: int
    dph_total: float
    interruptible: bool
    status_msg: str
    created_at: float
    uptime_seconds: float
    cost_usd: float

    @property
    def billing(self) -> bool:
        """Whether its GPU bills now (what keeps the sidebar's figures moving)."""
        return self.state in BILLING_STATES

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "provider": self.provider, "label": self.label, "run_id": self.run_id,
                "state": self.state, "gpu_name": self.gpu_name, "num_gpus": self.num_gpus,
                "dph_total": self.dph_total, "interruptible": self.interruptible, "status_msg": self.status_msg,
                "created_at": self.created_at, "uptime_seconds": self.uptime_seconds, "cost_usd": self.cost_usd}



@dataclass(frozen=True)
class StoppedInstance:
    """An instance after a stop: its state as the provider reads it back (``destroyed``: gone)."""

    id: str
    state: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state}


@dataclass(frozen=True)
class DestroyedInstance:
    """An instance after a destroy; ``existed``: False when it was already gone."""

    id: str
    existed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "destroyed": True, "existed": self.existed}


@dataclass(frozen=True)
class InstanceLogs:
    """An instance's recent log lines, secrets masked."""

    id: str
    logs: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "logs": self.logs}


@dataclass(frozen=True)
class LedgerSummary:
    """Spend from the ledger alone: today, this month (local calendar), per run and per instance
    in $; the suspect ``/charges/`` rows of the last answer (as stored: ``SuspectCharge.to_dict``)
    and the ledger lines left out as corrupt (their messages)."""

    today_usd: float
    month_usd: float
    per_run_usd: dict[str, float]
    per_instance_usd: dict[str, float]
    reconciled_with_charges: bool
    suspect_charges: tuple[dict[str, Any], ...]
    corrupt_lines: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"today_usd": self.today_usd, "month_usd": self.month_usd, "per_run_usd": dict(self.per_run_usd),
                "per_instance_usd": dict(self.per_instance_usd),
                "reconciled_with_charges": self.reconciled_with_charges,
                "suspect_charges": [dict(s) for s in self.suspect_charges],
                "corrupt_lines": list(self.corrupt_lines)}


@dataclass(frozen=True)
class CostSummary(LedgerSummary):
    """The ledger's spend against the budgets; ``month_fraction``: this month's share of the month
    budget (None while that budget is off)."""

    budgets: Budgets
    month_fraction: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "budgets": self.budgets.to_dict(), "month_fraction": self.month_fraction}
