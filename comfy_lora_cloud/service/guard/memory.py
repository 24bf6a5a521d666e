"""What the guard remembers from one pass to the next.

The App builds a fresh :class:`~.guard.Guard` for every pass (its provider client belongs to the
loop of that pass), so what must outlive a pass lives here, one object per App: a ComfyUI process
keeps enforcing and stays quiet about what it already said, round after round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..money import Budgets


@dataclass
class GuardMemory:
    # instance id -> when this guard first saw it, for ages while the state store is unreadable
    seen: dict[str, float] = field(default_factory=dict)
    # (kind, subject) of the problems the sidebar was told about and that still hold
    announced: set[tuple[str, str]] = field(default_factory=set)
    # (budget, instance id) of the 80 % warnings already sent
    warned: set[tuple[str, str]] = field(default_factory=set)
    # [month start, level] of the month budget as last told, while the state store cannot keep it
    month_told: list[Any] | None = None
    # the last budgets that could be read: a settings file broken mid-run must not switch enforcement off
    budgets: Budgets = field(default_factory=Budgets)
    # when the pass last swept a local bucket's partial files (guard.PARTIALS_EVERY_S)
    partials_swept_at: float = float("-inf")
    # (storage url, storage.identity.BucketTime, time.monotonic() then): the bucket's clock as last
    # learnt, reused for ownership.BUCKET_CLOCK_EVERY_S
    bucket_time: tuple[str, Any, float] | None = None
    # (storage url, run id) -> the limits a run recorded at launch, as first read: they never change
    # legitimately, so each is read once per process, and a host that rewrites its spec.json later
    # cannot loosen what it is held to
    run_limits: dict[tuple[str, str], Any] = field(default_factory=dict)
