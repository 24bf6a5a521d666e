"""vast.ai's rows and our records, both ways: an offer or an instance as vast.ai lists it read
into :class:`~..models.Offer` / :class:`~..models.Instance`, an :class:`~.base.OfferRequest`
written as vast.ai's search filter, and the ``/charges/`` pages checked before anything is booked.

Rows are read defensively: ``/charges/`` rows are checked by :func:`parse_charges` (an amount
that is not a finite, non-negative number is refused and reported, never booked); a listed
instance whose numbers are garbage keeps its id and label with those numbers read as 0.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from ..models import Instance, InstanceState, Offer, as_finite
from .base import OfferRequest, run_id_from_label, session_id_from_label

log = logging.getLogger(__name__)


# ---- charges ----------------------------------------------------------------------------------
@dataclass
class ChargeReport:
    """What ``/charges/`` said, checked: ``rows`` to book, ``problems`` (refused rows and pages),
    and whether the answer was read whole (``complete``)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    complete: bool = True

    def refuse(self, problem: str, *, whole: bool = True) -> None:
        """Record a problem; ``whole`` marks the answer as not read whole."""
        log.warning("vast.ai charges: %s", problem)
        self.problems.append(problem)
        if whole:
            self.complete = False


def _usd(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def parse_charges(data: Any, report: ChargeReport) -> str | None:
    """Check one ``/charges/`` page into ``report``; returns its ``next_token``.

    A row is kept when it is an object with a ``source`` text and an ``amount`` that is a finite
    number of dollars, not negative (a negative charge would hide real spend from the month
    budget). When one row of an instance is refused, all of that instance's rows are left out:
    booking part of a bill would read as the provider billing less than we estimated."""
    if not isinstance(data, dict):
        report.refuse(f"the answer is a JSON {type(data).__name__}, not an object")
        return None
    results = data.get("results")
    if results is None:
        results = []
    if not isinstance(results, list):
        report.refuse(f"'results' is a {type(results).__name__}, not a list")
        return None
    refused: set[str] = set()
    for i, row in enumerate(results):
        source = row.get("source") if isinstance(row, dict) else None
        if not isinstance(source, str):
            report.refuse(f"row {i} has no source", whole=False)
            continue
        amount = _usd(row.get("amount"))
        if amount is None:
            refused.add(source)
            report.refuse(f"{source[:60]}: amount {str(row.get('amount'))[:40]!r} refused "
                          "(not a finite, non-negative number)", whole=False)
            continue
        report.rows.append({**row, "amount": amount})
    if refused:
        report.rows = [r for r in report.rows if r["source"] not in refused]
    token = data.get("next_token")
    if token is None or token == "":
        return None
    if not isinstance(token, str):
        report.refuse(f"next_token {str(token)[:40]!r} is not text")
        return None
    return token


# ---- records ----------------------------------------------------------------------------------
_STATES = {None: InstanceState.CREATING, "created": InstanceState.CREATING, "loading": InstanceState.LOADING,
           "running": InstanceState.RUNNING, "stopped": InstanceState.STOPPED, "frozen": InstanceState.STOPPED,
           "exited": InstanceState.EXITED, "offline": InstanceState.OFFLINE, "unknown": InstanceState.UNKNOWN,
           "rebooting": InstanceState.LOADING, "scheduling": InstanceState.LOADING}
_FATAL_MARKERS = ("OCI runtime create failed", "Error response from daemon", "error pulling")


def offer_from_vast(row: dict[str, Any], interruptible: bool = False) -> Offer:
    return Offer(
        id=row["id"], gpu_name=row.get("gpu_name", ""), num_gpus=int(row.get("num_gpus") or 1),
        gpu_ram_gb=float(row.get("gpu_ram") or 0) / 1000.0, cpu_ram_gb=float(row.get("cpu_ram") or 0) / 1000.0,
        disk_gb=float(row.get("disk_space") or 0), dph_total=float(row.get("dph_total") or 0),
        storage_cost_per_gb_month=float(row.get("storage_cost") or 0),
        inet_down_mbps=float(row.get("inet_down") or 0), inet_up_mbps=float(row.get("inet_up") or 0),
        reliability=float(row.get("reliability2") or row.get("reliability") or 0),
        verified=bool(row.get("verified", row.get("verification") == "verified")),
        interruptible=interruptible or bool(row.get("is_bid")), min_bid=row.get("min_bid"),
        cuda_max_good=row.get("cuda_max_good"), geolocation=str(row.get("geolocation") or ""), provider="vast",
        raw=row,
    )


def _number(value: Any, default: float = 0.0) -> float:
    """A finite float, or ``default`` for anything else (None, text, NaN, inf)."""
    number = as_finite(value)
    return default if number is None else number


def instance_from_vast(row: dict[str, Any]) -> Instance:
    """Our record of one listed instance. Only ``id`` is required; a number that is not one
    reads as 0 (the instance stays visible to reconcile and the watchdog)."""
    status = row.get("actual_status")
    state = _STATES.get(status, InstanceState.UNKNOWN) if isinstance(status, (str, type(None))) \
        else InstanceState.UNKNOWN
    msg = str(row.get("status_msg") or "")
    if state is InstanceState.CREATING and any(m in msg for m in _FATAL_MARKERS):
        state = InstanceState.EXITED  # stuck for good: dstack treats this as fatal
    price = row.get("search") if isinstance(row.get("search"), dict) else {}
    disk_hour = _number(price.get("diskHour"))
    ssh_port = int(_number(row.get("ssh_port"))) or None
    return Instance(
        id=str(row["id"]), provider="vast", label=str(row.get("label") or ""), state=state,
        intended_state=str(row.get("intended_status") or "running"), gpu_name=str(row.get("gpu_name") or ""),
        num_gpus=int(_number(row.get("num_gpus"), 1.0)) or 1, dph_total=_number(row.get("dph_total")),
        storage_dph=disk_hour, created_at=_number(row.get("start_date")), started_at=None,
        ssh_host=row.get("ssh_host"), ssh_port=ssh_port,
        status_msg=msg, interruptible=bool(row.get("is_bid")), run_id=run_id_from_label(row.get("label")), raw=row,
        session_id=session_id_from_label(row.get("label")),
    )


def offer_query(req: OfferRequest) -> dict[str, Any]:
    """The vast.ai filter object for ``req``."""
    q: dict[str, Any] = {"rentable": {"eq": True}, "external": {"eq": False}, "rented": {"eq": False},
                         "num_gpus": {"eq": req.num_gpus}, "type": "bid" if req.interruptible else "on-demand",
                         "order": [["dph_total", "asc"]], "limit": req.limit}
    if req.verified is not None:
        q["verified"] = {"eq": req.verified}
    if req.gpu_names:
        q["gpu_name"] = {"in": list(req.gpu_names)}
    if req.min_vram_gb:
        q["gpu_ram"] = {"gte": req.min_vram_gb * 1000}
    if req.min_ram_gb:
        q["cpu_ram"] = {"gte": req.min_ram_gb * 1000}
    if req.min_disk_gb:
        q["disk_space"] = {"gte": req.min_disk_gb}
    if req.min_reliability:
        q["reliability"] = {"gte": req.min_reliability}
    if req.max_dph is not None:
        q["dph_total"] = {"lte": req.max_dph}
    if req.min_inet_down_mbps:
        q["inet_down"] = {"gte": req.min_inet_down_mbps}
    if req.min_cuda is not None:
        q["cuda_max_good"] = {"gte": req.min_cuda}
    if req.regions:
        q["geolocation"] = {"in": list(req.regions)}
    if req.allocated_storage_gb:
        q["allocated_storage"] = req.allocated_storage_gb
    return q
