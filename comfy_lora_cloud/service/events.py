"""The names of the live events, and the sink type every service emits them through.

ComfyUI sends them to every open sidebar through its websocket (``comfy/events.py``); the CLI and
tests pass their own sink or none. Each name is defined here and nowhere else.

    lora_cloud.run        one run's view (state, step, loss, ETA, samples) whenever it changes
    lora_cloud.instance   {"instances": [...]} when instances change (and while any bills)
    lora_cloud.budget     {"kind": "warning"|"exceeded"|"changed"|"enforced"|"enforce_failed", ...}
    lora_cloud.guard      {"kind": "problem", "message"}: a record the guard skipped, a settings
                          file it could not read; enforcement went on for everything else
    lora_cloud.session    {"kind", "id", "session": <view>, "message"?}: a remote ComfyUI session
                          started, became ready or ended; ``kind`` is its state, ``idle_stopped``
                          when it ended for idleness (a notification, service/notify/)
    lora_cloud.preemption {"kind": "preempted"|"resumed"|"relaunched"|"gave_up", "run_id",
                          "instance_id", "message", ...}: a run's instance was preempted and what the
                          guard's recovery (service/runs/recovery.py) did about it
    lora_cloud.notify     {"id", "kind", "title", "message", "severity"}: a notice's toast
                          (service/notify/)
"""

from __future__ import annotations

from typing import Any, Callable

RUN_EVENT = "lora_cloud.run"
INSTANCE_EVENT = "lora_cloud.instance"
BUDGET_EVENT = "lora_cloud.budget"
GUARD_EVENT = "lora_cloud.guard"
SESSION_EVENT = "lora_cloud.session"
PREEMPTION_EVENT = "lora_cloud.preemption"
NOTIFY_EVENT = "lora_cloud.notify"

Emit = Callable[[str, dict[str, Any]], None]


def no_emit(event: str, data: dict[str, Any]) -> None:
    """Nobody is listening (the CLI, tests that do not care)."""
