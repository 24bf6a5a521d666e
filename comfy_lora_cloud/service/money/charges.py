"""The provider's ``/charges/`` rows, held to what an instance could have billed.

The rows come validated from the provider client (``providers.vast.parse_charges``: a finite
amount, never negative), the one place that checks their shape; :func:`cap_charges` is the one
place that checks their size against the instance's rate. A row above :data:`CHARGE_MARGIN` times
the instance's $/h over the row's span, plus :data:`CHARGE_SLACK_USD`, is *suspect*: counted at
that most, and reported (the ledger's module docstring says why it is never ignored).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from ...providers.base import LABEL_PREFIX
from ...settings import MAX_DPH

CHARGES_WINDOW_S = 32 * 86400  # how far back the ledger reads /charges/: the month, and a day more


def billed_by_instance(charges: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Instance id -> $ billed, from ``/charges/`` rows (``source: "instance-<id>"``), as the
    provider client validated them (``providers.vast.parse_charges``)."""
    out: dict[str, float] = {}
    for row in charges:
        src = str(row.get("source") or "")
        if src.startswith("instance-"):
            iid = src[len("instance-"):]
            out[iid] = out.get(iid, 0.0) + float(row.get("amount") or 0.0)
    return out


def our_charge(row: dict[str, Any], listed: set[str]) -> bool:
    """Whether a charge row is one of ours: its instance is listed as ours now, or the row's
    label (``metadata.label``) is one this pack gives (runs and sessions)."""
    src = str(row.get("source") or "")
    if src.startswith("instance-") and src[len("instance-"):] in listed:
        return True
    meta = row.get("metadata")
    label = meta.get("label") if isinstance(meta, dict) else None
    return isinstance(label, str) and label.startswith(LABEL_PREFIX)


def charge_span(row: dict[str, Any], now: float) -> tuple[float, float] | None:
    """The span a charge row bills, ending by ``now``; None when it has no readable span."""
    start, end = row.get("start"), row.get("end")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (start, end)):
        end = min(float(end), now)  # type: ignore[arg-type]
        return min(float(start), end), end  # type: ignore[arg-type]
    return None


#: a charge row is suspect above CHARGE_MARGIN x (its instance's $/h x the row's span) + CHARGE_SLACK_USD
CHARGE_MARGIN = 1.5
CHARGE_SLACK_USD = 1.0
#: the $/h an instance of ours with no known rate is held to while max_dph is off: the most max_dph may be
UNKNOWN_DPH = MAX_DPH


@dataclass(frozen=True)
class SuspectCharge:
    """A ``/charges/`` row that bills more than its instance could have: what it said, and what
    the budgets count instead (the most the rate allows)."""

    instance_id: str
    billed_usd: float
    counted_usd: float
    dph: float
    hours: float

    @property
    def message(self) -> str:
        return (f"vast.ai billed instance {self.instance_id} ${self.billed_usd:,.2f} for {self.hours:.2f} h, but at "
                f"${self.dph:.3f}/h it could bill at most ${self.counted_usd:.2f}: counted as ${self.counted_usd:.2f} "
                "for the budgets and shown as suspect; check the bill on vast.ai")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message}


def cap_charges(rows: Iterable[dict[str, Any]], rates: dict[str, float], *, now: float, since: float,
                fallback_dph: float = 0.0) -> tuple[list[dict[str, Any]], list[SuspectCharge]]:
    """The rows with each suspect amount replaced by the most its instance could have billed,
    and the suspects (module docstring).

    ``rates``: instance id -> $/h as we know it (listed now, or last seen in the state store);
    an instance of ours (by its row's label) we know no rate for is held to ``fallback_dph``
    (max_dph: the watchdog destroys anything above it); when that is 0 (off), to
    :data:`UNKNOWN_DPH` over the whole window (nothing says when or at what rate it ran, but a
    bound there is: a realistic bill is believed, $1e9 or $1e308 is not). Rows of instances that
    are not ours count for nothing, and are left as they are. A row's span counts from ``since``
    (the start of the answer's window) at the earliest; a row without a readable span is held to
    the whole window."""
    out: list[dict[str, Any]] = []
    suspects: list[SuspectCharge] = []
    for row in rows:
        src = str(row.get("source") or "")
        iid = src[len("instance-"):] if src.startswith("instance-") else None
        unbounded = bool(iid) and not rates.get(iid) and not fallback_dph and our_charge(row, set())
        dph = (rates.get(iid) or (fallback_dph if our_charge(row, set()) else 0.0)) if iid else 0.0
        if unbounded:
            dph = UNKNOWN_DPH
        if not dph or dph <= 0:
            out.append(row)
            continue
        start, end = (since, now) if unbounded else (charge_span(row, now) or (since, now))
        hours = max(end - max(start, since), 0.0) / 3600.0
        most = dph * hours * CHARGE_MARGIN + CHARGE_SLACK_USD
        amount = float(row.get("amount") or 0.0)
        if amount <= most:
            out.append(row)
            continue
        suspects.append(SuspectCharge(str(iid), amount, round(most, 6), dph, round(hours, 4)))
        out.append({**row, "amount": most})
    return out, suspects
