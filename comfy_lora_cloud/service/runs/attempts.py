"""A run's attempts: the preemption policy that bounds them (:class:`Policy`), each announced in
the bucket before its GPU is rented (:func:`announce_attempt`), and the history every reader
builds back from the bucket's events (:func:`history`).

The guard's round that moves a preempted run is :class:`~.recovery.Recovery`; ``train start``
records the run's own policy (:meth:`Policy.overrides`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...models import Offer, Record, Run, RunState, RunStatus
from ...storage.base import Storage
from ...training.status import StatusReporter


@dataclass(frozen=True)
class Policy:
    wait_s: float  # how long to wait for a preempted instance to resume
    max_attempts: int  # instances (and failed launches) one run may use
    on_demand_after: int  # rent on-demand from this many preemptions on; 0: never

    @classmethod
    def of(cls, settings: Any, run: Run) -> "Policy":
        """The settings' policy with the run's own overrides (``Run.spec["recovery"]``); an
        override that is not a sane number is ignored (the store is ours, but be strict)."""
        own = run.spec.get("recovery") if isinstance(run.spec.get("recovery"), dict) else {}

        def pick(key: str, default: float, low: float, high: float) -> float:
            value = own.get(key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            return float(value) if ok and low <= value <= high else float(default)

        return cls(wait_s=60.0 * pick("wait_minutes", settings.preempt_wait_minutes, 0, 24 * 60),
                   max_attempts=int(pick("max_attempts", settings.preempt_max_attempts, 1, 50)),
                   on_demand_after=int(pick("on_demand_after", settings.preempt_on_demand_after, 0, 50)))

    @staticmethod
    def overrides(*, wait_minutes: float | None = None, max_attempts: int | None = None,
                  on_demand_after: int | None = None) -> dict[str, float | int]:
        """A run's own policy as ``train start`` stores it (unset keys follow the settings)."""
        out: dict[str, float | int] = {}
        for key, value, low, high in (("wait_minutes", wait_minutes, 0, 24 * 60),
                                      ("max_attempts", max_attempts, 1, 50),
                                      ("on_demand_after", on_demand_after, 0, 50)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise ConfigError(f"{key} must be a number from {low} to {high}, not {value!r}")
            out[key] = value
        return out



# ---- the bucket: what every reader sees ----------------------------------------------------------
def announce_attempt(storage: Storage, run_id: str, attempt: int, offer: Offer, interruptible: bool, *,
                     fresh: bool, message: str = "") -> None:
    """Write attempt ``attempt`` (the GPU and price about to be rented) to the run's events and
    its status LAUNCHING. Written before the create call, when no trainer of the run is alive to
    overwrite the events. ``fresh``: a new run (whatever is in the bucket is not read)."""
    reporter = StatusReporter(storage, run_id)
    if not fresh:
        reporter.resume_from_bucket()
    reporter.event("attempt", n=attempt, gpu=offer.gpu_name, dph=round(offer.dph_total, 4),
                   interruptible=interruptible, offer_id=offer.id)
    reporter.update(state=RunState.LAUNCHING, message=message or f"renting {offer.gpu_name}", eta_seconds=None)
    reporter.flush()


def mark_preempted_in_bucket(storage: Storage, run_id: str, message: str, **event: Any) -> bool:
    """The run is PREEMPTED for every reader, with a ``preempted`` event, unless its trainer
    already said so (it got SIGTERM) or it reported an end. Returns whether it wrote."""
    reporter = StatusReporter(storage, run_id)
    previous = reporter.resume_from_bucket()
    if previous is not None and (previous.state.is_terminal or previous.state is RunState.PREEMPTED):
        return False
    reporter.event("preempted", by="guard", **event)
    reporter.update(state=RunState.PREEMPTED, message=message, eta_seconds=None)
    reporter.flush()
    return True



# ---- the history every reader sees ---------------------------------------------------------------
@dataclass(frozen=True)
class Attempt(Record):
    n: int
    instance_id: str | None = None
    gpu: str = ""
    dph: float | None = None
    interruptible: bool | None = None
    started_at: float | None = None
    ended_at: float | None = None
    step_start: int = 0
    step_end: int | None = None
    preemptions: int = 0
    end: str = "running"  # running | preempted | done | failed | ...
    cost_usd: float | None = None


@dataclass(frozen=True)
class RunHistory(Record):
    attempts: tuple[Attempt, ...] = ()
    preemptions: int = 0
    lost_s: float = 0.0  # time lost to preemptions: downtime plus the training repeated
    lost_steps: int = 0  # steps trained again after a preemption
    total_usd: float | None = None  # every attempt, from this controller's ledger

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "attempts": [a.to_dict() for a in self.attempts]}


def history(events: list[dict[str, Any]], status: RunStatus | None, *, costs: dict[str, float] | None = None,
            instances: list[str] | None = None, now: float | None = None) -> RunHistory:
    """The run's attempts from its events (``attempt`` by the controller before each rent,
    ``started``/``resumed``/``preempted`` by its trainers and the guard, the ``state`` changes),
    with ``costs`` per instance id and the ``instances`` of the run in launch order (this
    controller's store) where the events do not name one."""
    now = time.time() if now is None else now
    # each attempt is a draft (its fields as a dict) while the events are read, frozen at the end
    attempts: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    pending: dict[str, float] | None = None  # a preemption the run has not come back from
    resumed_step = 0
    rented = True  # the current attempt got an instance (its trainer started)
    preemptions, lost_s, lost_steps = 0, 0.0, 0
    sps = status.sec_per_step if status is not None and status.sec_per_step else 0.0

    def number(e: dict[str, Any], key: str) -> float | None:
        v = e.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    def draft(**fields: Any) -> dict[str, Any]:
        return Attempt(n=len(attempts) + 1, **fields).to_dict()

    def ensure(t: float) -> dict[str, Any]:
        nonlocal cur
        if cur is None:
            cur = draft(started_at=t)
            attempts.append(cur)
        return cur

    for e in events:
        kind, t = e.get("kind"), number(e, "t") or 0.0
        iid = e.get("instance") if isinstance(e.get("instance"), str) else None
        if kind == "attempt":
            if cur is not None and not rented:  # that attempt's launch never got an instance
                attempts.pop()
            rented = False
            cur = draft(gpu=str(e.get("gpu") or "")[:60], dph=number(e, "dph"),
                        interruptible=e.get("interruptible") if isinstance(e.get("interruptible"), bool) else None,
                        started_at=t)
            attempts.append(cur)
            resumed_step = 0
        elif kind == "started":
            rented = True
            a = ensure(t)
            a["instance_id"] = a["instance_id"] or iid
        elif kind == "resumed":
            a = ensure(t)
            a["instance_id"] = a["instance_id"] or iid
            resumed_step = int(number(e, "step") or 0)
            if a["step_end"] is None and not a["preemptions"]:
                a["step_start"] = resumed_step
        elif kind == "preempted":
            rented = True
            a = ensure(t)
            a["instance_id"] = a["instance_id"] or iid
            a["preemptions"] += 1
            a.update(step_end=int(number(e, "step") or 0), end="preempted", ended_at=t)
            preemptions += 1
            pending = {"t": t, "step": a["step_end"]}
        elif kind == "state" and e.get("state") in ("starting", "training") and cur is not None \
                and cur["end"] == "preempted":
            cur.update(end="running", ended_at=None)  # the same instance came back
        if kind == "state" and e.get("state") == "training" and pending is not None:
            redo = max(int(pending["step"]) - resumed_step, 0)
            lost_steps += redo
            lost_s += max(t - pending["t"], 0.0) + redo * sps
            pending = None
        elif kind == "state" and isinstance(e.get("state"), str) and e["state"] in {s.value for s in RunState} \
                and RunState(e["state"]).is_terminal and cur is not None:
            cur.update(end=e["state"], ended_at=t)
    if pending is not None and status is not None and not status.state.is_terminal:
        lost_s += max(now - pending["t"], 0.0)  # still down
    last = attempts[-1] if attempts else None
    if last is not None and status is not None and last["end"] != "preempted":
        last["step_end"] = status.step
        if status.state.is_terminal:
            last["end"] = status.state.value
    for i, a in enumerate(attempts):
        if a["instance_id"] is None and instances and i < len(instances):
            a["instance_id"] = instances[i]
        if costs is not None and a["instance_id"] is not None:
            a["cost_usd"] = round(costs.get(a["instance_id"], 0.0), 4)
    return RunHistory(attempts=tuple(Attempt(**a) for a in attempts), preemptions=preemptions,
                      lost_s=round(lost_s, 1), lost_steps=lost_steps,
                      total_usd=round(sum(costs.values()), 4) if costs is not None else None)
