"""What a user asks of a remote ComfyUI session (:class:`SessionRequest`), the id a new session
gets, and what a ``lora_cloud.session`` event carries. The edges read a request from what they
were given (the sidebar's JSON body: ``comfy/routes/sessions.py``; the CLI's options) and hand the service
this typed record."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from ...errors import ConfigError
from ...models import SessionState, check_number, is_number
from ...providers.base import with_bucket_tag
from ...settings import MAX_SESSION_HOURS
from ...training import inference

DEFAULT_IDLE_MINUTES = 20.0
DEFAULT_VRAM_GB = 24.0

# what a session request's numbers may be: (low, high), low exclusive (a session's hours may be
# seconds: the image and the guard end it at once, nothing bills on)
REQUEST_RANGES = {"vram_gb": (0.0, 1024.0), "idle_minutes": (0.0, MAX_SESSION_HOURS * 60),
                  "max_hours": (0.0, MAX_SESSION_HOURS)}


@dataclass
class SessionRequest:
    """What a user asks for; the offer, the port and the environment are derived."""

    gpu: str | None = None  # a GPU model (4090, a100...); None: the cheapest that fits
    vram_gb: float = DEFAULT_VRAM_GB
    idle_minutes: float = DEFAULT_IDLE_MINUTES
    max_hours: float | None = None  # None: the session_max_hours setting (the runs' max_run_hours never applies)
    precision: str = "fp8"

    def checked(self, default_max_hours: float | None = None) -> "SessionRequest":
        """Checked, with ``max_hours`` filled from ``default_max_hours`` (the settings') when unset."""
        if self.max_hours is None and default_max_hours is not None:
            self.max_hours = float(default_max_hours)
        if is_number(self.max_hours) and self.max_hours > MAX_SESSION_HOURS:
            raise ConfigError(f"max_hours is at most {MAX_SESSION_HOURS:g}: a session is for generating, not for "
                              "keeping")
        for name, (low, high) in REQUEST_RANGES.items():
            value = getattr(self, name)
            if value is None and name == "max_hours":
                continue
            setattr(self, name, float(check_number(name, value, low, high, above=True)))
        inference.model_files(self.precision)  # fp8 or fp16
        return self


def session_event(view: dict[str, Any], message: str | None = None) -> dict[str, Any]:
    """What a ``lora_cloud.session`` event carries (service/events.py)."""
    state = str(view.get("state"))
    data = {"kind": "idle_stopped" if state == SessionState.IDLE.value else state, "id": view.get("id"),
            "session": view}
    if message:
        data["message"] = message
    return data


def new_session_id(clock: Callable[[], float] = time.time, *, bucket_id: str | None = None) -> str:
    """``session-<UTC time>-<4 hex>``, ending with ``.b<bucket id>`` when given (every start
    gives its bucket's: the label then says which bucket the session lives in)."""
    sid = f"session-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(clock()))}-{secrets.token_hex(2)}"
    return with_bucket_tag(sid, bucket_id) if bucket_id else sid
