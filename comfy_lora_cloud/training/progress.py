"""Parse kohya's console output into events.

kohya's tqdm bar redraws itself with ``\\r`` and never ends a line, while its log lines end with
``\\n``: the parser splits on both and keeps an unfinished tail for the next chunk, so it can be
fed whatever ``read()`` returned. It never raises on odd input: a line it does not know is just
not an event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_BAR = re.compile(
    r"^\s*steps:\s+\d+%\|.*?\|\s*(?P<step>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+),\s*(?P<rate>[\d.?]+)(?P<unit>s/it|it/s)(?P<post>.*)\]"
)
_LOSS = re.compile(r"avr_loss=(?P<loss>[-+\d.eE]+|nan|inf)")
_EPOCH = re.compile(r"^\s*epoch (?P<epoch>\d+)/(?P<total>\d+)\s*$")
_TOTAL_STEPS = re.compile(r"total optimization steps.*?:\s*(?P<n>\d+)")
_BATCHES = re.compile(r"num batches per epoch.*?:\s*(?P<n>\d+)")
_EPOCHS = re.compile(r"num epochs.*?:\s*(?P<n>\d+)")
_SAMPLE = re.compile(r"generating sample images at step.*?:\s*(?P<step>\d+)")
_STATE = re.compile(r"saving state at (?P<what>epoch|step) (?P<n>\d+)")
_CHECKPOINT = re.compile(r"saving checkpoint: (?P<path>\S+)")
_ERROR_HINTS = (
    ("No data found", "kohya found no images in the dataset folder"),
    ("CUDA out of memory", "the GPU ran out of memory (try a larger GPU tier or a smaller rank/batch)"),
    ("OutOfMemoryError", "the GPU ran out of memory (try a larger GPU tier or a smaller rank/batch)"),
)


@dataclass(frozen=True)
class Event:
    """One thing kohya reported. ``kind``: step, epoch, plan, sample, state_saved, checkpoint,
    model_saved, error."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


def _seconds(hms: str) -> float | None:
    if "?" in hms:
        return None
    secs = 0.0
    for part in hms.split(":"):
        secs = secs * 60 + float(part)
    return secs


class ProgressParser:
    """Feed chunks of output, get :class:`Event` lists back."""

    def __init__(self) -> None:
        self._tail = ""
        self._traceback: list[str] | None = None

    def feed(self, chunk: str) -> list[Event]:
        text = self._tail + chunk
        parts = re.split(r"[\r\n]", text)
        self._tail = parts.pop()
        events: list[Event] = []
        for line in parts:
            events.extend(self._line(line))
        # a tqdm frame is complete once its closing bracket is there, even without a \r after it
        if _BAR.match(self._tail):
            events.extend(self._line(self._tail))
            self._tail = ""
        return events

    def close(self) -> list[Event]:
        """End of output: flush the tail and an unfinished traceback."""
        events = self._line(self._tail) if self._tail else []
        self._tail = ""
        if self._traceback:
            events.append(self._traceback_event())
        return events

    def _traceback_event(self) -> Event:
        lines, self._traceback = self._traceback or [], None
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "unknown error")
        return Event("error", {"message": last, "traceback": "\n".join(lines[-40:])})

    def _line(self, line: str) -> list[Event]:
        events: list[Event] = []
        if self._traceback is not None:
            if line.startswith((" ", "\t")) or not line.strip() or line.startswith("Traceback"):
                self._traceback.append(line)
                return events
            self._traceback.append(line)  # the exception line ends the traceback
            events.append(self._traceback_event())
            return events
        if line.startswith("Traceback (most recent call last)"):
            self._traceback = [line]
            return events
        m = _BAR.match(line)
        if m:
            rate = None if "?" in m["rate"] else float(m["rate"])
            sec_per_step = None if not rate else (rate if m["unit"] == "s/it" else 1.0 / rate)
            loss_m = _LOSS.search(m["post"])
            loss = float(loss_m["loss"]) if loss_m else None
            events.append(Event("step", {
                "step": int(m["step"]), "total": int(m["total"]), "sec_per_step": sec_per_step,
                "loss": loss, "eta_seconds": _seconds(m["remaining"]),
            }))
            return events
        for pattern, kind, key in ((_EPOCH, "epoch", None), (_SAMPLE, "sample", None), (_STATE, "state_saved", None),
                                   (_CHECKPOINT, "checkpoint", None), (_TOTAL_STEPS, "plan", "total_steps"),
                                   (_BATCHES, "plan", "batches_per_epoch"), (_EPOCHS, "plan", "epochs")):
            m = pattern.search(line)
            if not m:
                continue
            if kind == "plan":
                events.append(Event("plan", {key: int(m["n"])}))
            elif kind == "epoch":
                events.append(Event("epoch", {"epoch": int(m["epoch"]), "total": int(m["total"])}))
            elif kind == "sample":
                events.append(Event("sample", {"step": int(m["step"])}))
            elif kind == "state_saved":
                events.append(Event("state_saved", {m["what"]: int(m["n"])}))
            else:
                events.append(Event("checkpoint", {"path": m["path"]}))
            return events
        if "model saved." in line:
            events.append(Event("model_saved"))
            return events
        for needle, message in _ERROR_HINTS:
            if needle in line:
                events.append(Event("error", {"message": message, "line": line.strip()[:500]}))
                break
        return events
