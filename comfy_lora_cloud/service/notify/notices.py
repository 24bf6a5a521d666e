"""What a notice is, and which notices an event means (pure: no I/O, the tests feed it events)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from ...errors import redact
from ..events import BUDGET_EVENT, PREEMPTION_EVENT, RUN_EVENT, SESSION_EVENT

SCHEMA = "lora-cloud.notification.v1"
KINDS = ("run_done", "run_failed", "run_preempted", "run_resumed", "budget_80", "budget_100", "session_idle", "test")
SEVERITY = {"run_done": "success", "run_failed": "error", "run_preempted": "warn", "run_resumed": "info",
            "budget_80": "warn", "budget_100": "error", "session_idle": "info", "test": "info"}
EVENTS = (RUN_EVENT, BUDGET_EVENT, PREEMPTION_EVENT, SESSION_EVENT)  # the events that can mean a notice
MAX_AGE_S = 24 * 3600  # a run that ended longer ago than this is not news
FAILED_STATES = ("failed", "timed_out", "lost")
MAX_TEXT = 1500  # Discord takes 2000 characters; titles and messages are short anyway


@dataclass(frozen=True)
class Notice:
    """One thing worth telling. ``key`` names the happening (see the module's table)."""

    kind: str
    key: str
    title: str
    message: str
    at: float
    subject: dict[str, Any] = field(default_factory=dict)  # ids and numbers only: run_id, dataset...

    @property
    def id(self) -> str:
        """A stable delivery id for the key (what a receiver drops a second delivery by)."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "info")

    def to_dict(self) -> dict[str, Any]:
        """The webhook's stable JSON schema (``SCHEMA``)."""
        return {
            "schema": SCHEMA, "id": self.id, "key": self.key, "kind": self.kind, "severity": self.severity,
            "title": self.title, "message": self.message, "at": self.at,
            "time": datetime.fromtimestamp(self.at, timezone.utc).isoformat().replace("+00:00", "Z"),
            "subject": dict(self.subject),
        }

    @classmethod
    def from_dict(cls, d: Any) -> "Notice":
        """The notice a ledger row keeps (``dataclasses.asdict``); ValueError when it is not one."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a {type(d).__name__}, not a notice")
        text = [d.get(k) for k in ("kind", "key", "title", "message")]
        at, subject = d.get("at"), d.get("subject") or {}
        if not all(isinstance(t, str) for t in text) or finite(at) is None or not isinstance(subject, Mapping):
            raise ValueError("a notice with a field missing or of the wrong type")
        return cls(*text, at=float(at), subject=dict(subject))


def finite(value: Any) -> float | None:
    """``value`` when it is a finite number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def clean_text(value: Any, limit: int = MAX_TEXT) -> str:
    return redact(str(value))[:limit]


# ---- from events to notices ------------------------------------------------------------------
def _money(usd: Any) -> str:
    return f"${usd:.2f}" if isinstance(usd, (int, float)) and not isinstance(usd, bool) else ""


def notices_for(event: str, data: Mapping[str, Any], now: float) -> list[Notice]:
    """The notices an event means (mostly none). Pure: the tests feed it events directly."""
    if not isinstance(data, Mapping):
        return []
    if event == RUN_EVENT:
        return _run_notices(data, now)
    if event == BUDGET_EVENT:
        return _budget_notices(data, now)
    if event == PREEMPTION_EVENT:
        return _preemption_notices(data, now)
    if event == SESSION_EVENT and data.get("kind") in ("idle_stopped", "stopped_idle", "idle"):
        sid = clean_text(data.get("id") or data.get("session_id") or "?", 100)
        return [Notice("session_idle", f"session:{sid}:idle", "Session stopped for idleness",
                       clean_text(data.get("message") or f"Remote ComfyUI session {sid} was idle and has been stopped; "
                                                   "nothing bills for it any more."), now, {"session_id": sid})]
    return []


def _run_notices(run: Mapping[str, Any], now: float) -> list[Notice]:
    run_id = run.get("id") or run.get("run_id")
    state = run.get("state")
    if not isinstance(run_id, str) or not isinstance(state, str):
        return []
    name = clean_text(run.get("lora_name") or run_id, 120)
    subject = {k: run.get(k) for k in ("dataset", "lora_name", "gpu", "cost_usd", "step", "total_steps")
               if isinstance(run.get(k), (str, int, float)) and not isinstance(run.get(k), bool)}
    subject["run_id"] = run_id
    subject["state"] = state
    at = finite(run.get("updated_at") or run.get("created_at"))
    if at is not None:
        at = min(at, now)  # a time ahead of this clock (a skewed host) is "just now", never a date past 9999
    cost = _money(run.get("cost_usd"))
    if state == "done" or state in FAILED_STATES:
        if at is None or now - at > MAX_AGE_S:
            return []  # old news (or undated): never announced on a first start
        if state == "done":
            return [Notice("run_done", f"run:{run_id}:done", f"LoRA ready: {name}",
                           f"Run {run_id} finished" + (f" for {cost}" if cost else "") + ".", at, subject)]
        why = clean_text(run.get("error") or run.get("message") or state.replace("_", " "), 400)
        return [Notice("run_failed", f"run:{run_id}:failed", f"Run failed: {name}",
                       f"Run {run_id} ended {state.replace('_', ' ')}: {why}", at, subject)]
    return []


def _preemption_notices(data: Mapping[str, Any], now: float) -> list[Notice]:
    """What the guard's recovery (service/runs/recovery.py) announces: ``preempted``, then ``resumed``
    (the instance came back) or ``relaunched`` (moved to another); ``gave_up`` ends the run, which
    its run event announces as failed."""
    run_id = data.get("run_id")
    kind = data.get("kind")
    if not isinstance(run_id, str) or kind not in ("preempted", "resumed", "relaunched"):
        return []
    subject = {k: data.get(k) for k in ("run_id", "instance_id", "step", "checkpoint_step", "preemptions", "attempt",
                                         "gpu", "dph", "waited_s") if isinstance(data.get(k), (str, int, float))
               and not isinstance(data.get(k), bool)}
    message = clean_text(data.get("message") or kind, 400)
    if kind == "preempted":
        count = data.get("preemptions") if isinstance(data.get("preemptions"), int) else 1
        return [Notice("run_preempted", f"run:{run_id}:preempted:{count}", f"Run preempted: {run_id}",
                       f"The GPU of run {run_id} was taken back; {message}", now, subject)]
    instance = clean_text(data.get("instance_id") or data.get("attempt") or "?", 60)
    how = "resumed on its instance" if kind == "resumed" else "moved to a new instance"
    return [Notice("run_resumed", f"run:{run_id}:resumed:{instance}", f"Run resumed: {run_id}",
                   f"Run {run_id} {how}: {message}", now, subject)]


def _budget_notices(data: Mapping[str, Any], now: float) -> list[Notice]:
    kind = data.get("kind")
    if kind not in ("warning", "exceeded", "enforced"):
        return []
    level = "80" if kind == "warning" else "100"
    budget = data.get("budget") or "max_month_usd"
    if budget == "max_month_usd" and not data.get("instance_id"):
        subject = datetime.fromtimestamp(now).strftime("%Y-%m")  # the monthly budget: once a month
    else:  # a per-instance or per-run limit: once per instance (or run)
        subject = str(data.get("run_id") or data.get("instance_id") or "?")[:100]
    title = "Budget at 80%" if level == "80" else ("Budget reached: instance destroyed" if kind == "enforced"
                                                    else "Budget reached")
    message = clean_text(data.get("message") or f"{budget} reached {level}%", 400)
    info = {k: data.get(k) for k in ("budget", "instance_id", "run_id", "value", "limit", "month_usd", "max_month_usd")
            if isinstance(data.get(k), (str, int, float)) and not isinstance(data.get(k), bool)}
    return [Notice(f"budget_{level}", f"budget:{budget}:{subject}:{level}", title, message, now, info)]
