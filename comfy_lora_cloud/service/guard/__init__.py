"""The guard: one pass of reconcile, preemption recovery and the budget watchdog, the same from
ComfyUI's loop, the CLI and cron. :mod:`.guard` runs the pass, :mod:`.reconcile`,
:mod:`.watchdog` and :mod:`.store_rebuild` are its steps, :mod:`.memory` what it remembers
between passes, :mod:`.report` what a pass hands back."""

from .guard import Guard, provider_charges
from .memory import GuardMemory
from .report import GuardReport
from .store_rebuild import rebuild

__all__ = [
    "Guard",
    "GuardMemory",
    "GuardReport",
    "provider_charges",
    "rebuild",
]
