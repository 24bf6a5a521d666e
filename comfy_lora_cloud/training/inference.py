"""The inference image's contract, shared by the controller (``service/sessions/control.py``) and the
image's supervisor (``worker/inference.py``): the environment a session's instance gets, the
base weights it loads, and the status it reports to the bucket.

    sessions/<id>/status.json     the supervisor's heartbeat (:class:`~..models.SessionStatus`)
    outputs/<id>/<file>           every image the remote ComfyUI saved, + <file>.json (its workflow)

ComfyUI listens on ``127.0.0.1:<port>`` inside the instance only: it is reached through the SSH
tunnel, never through a public port.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from ..errors import CorruptRecord, ObjectNotFound
from ..models import SessionState, SessionStatus
from ..storage.base import Storage, read_json_record
from ..storage.layout import session_key

DEFAULT_PORT = 8188
STATUS = "status.json"
PRECISIONS = ("fp8", "fp16")

# the environment of a session's instance (docs/credentials.md: the narrowest that works)
ENV_SESSION = "LORA_CLOUD_SESSION_ID"
ENV_STORAGE = "LORA_CLOUD_STORAGE"
ENV_PORT = "LORA_CLOUD_COMFY_PORT"
ENV_IDLE = "LORA_CLOUD_IDLE_MINUTES"
ENV_MAX_HOURS = "LORA_CLOUD_MAX_HOURS"
ENV_PRECISION = "LORA_CLOUD_FLUX_PRECISION"

# ComfyUI model folder -> (file name, Hugging Face repo) per precision. The fp16 files are the
# trainer's (training/kohya_config.py MODEL_FILES), so a bucket that trained once serves fp16
# sessions without a download; the bucket's models/ cache is keyed by file name.
# The names were checked against public use (the Hub itself is out of reach here): Kijai/flux-fp8's
# flux1-dev-fp8.safetensors (e4m3fn, 11,905,822,720 bytes) is the file fluxgym and other installers
# download from resolve/main/; comfyanonymous/flux_text_encoders holds clip_l, t5xxl_fp8_e4m3fn and
# t5xxl_fp16 under those names; ae.safetensors and flux1-dev.safetensors are BFL's gated repo's.
_FP8 = {
    "diffusion_models": ("flux1-dev-fp8.safetensors", "Kijai/flux-fp8"),
    "text_encoders/t5": ("t5xxl_fp8_e4m3fn.safetensors", "comfyanonymous/flux_text_encoders"),
}
_FP16 = {
    "diffusion_models": ("flux1-dev.safetensors", "black-forest-labs/FLUX.1-dev"),
    "text_encoders/t5": ("t5xxl_fp16.safetensors", "comfyanonymous/flux_text_encoders"),
}
_COMMON = {
    "text_encoders/clip_l": ("clip_l.safetensors", "comfyanonymous/flux_text_encoders"),
    "vae": ("ae.safetensors", "black-forest-labs/FLUX.1-dev"),
}


# the names workflows use for a role (the pack's templates, workflows/templates.py, name the fp16
# Flux file and the fp8 T5, as most Flux graphs do): the supervisor links each to the file the
# session has, so a graph runs whatever the precision (ComfyUI reads the dtype from the file)
ALIASES = {
    "diffusion_models": ("flux1-dev.safetensors", "flux1-dev-fp8.safetensors"),
    "text_encoders/t5": ("t5xxl_fp8_e4m3fn.safetensors", "t5xxl_fp16.safetensors"),
}


def model_files(precision: str = "fp8") -> dict[str, tuple[str, str]]:
    """``{role: (file name, repo)}``; the role's first part is ComfyUI's models/ folder."""
    if precision not in PRECISIONS:
        from ..errors import ConfigError

        raise ConfigError(f"precision must be {' or '.join(PRECISIONS)}, not {precision!r}")
    return {**(_FP8 if precision == "fp8" else _FP16), **_COMMON}


def comfy_folder(role: str) -> str:
    return role.split("/", 1)[0]


def status_key(session_id: str) -> str:
    return session_key(session_id, STATUS)


def read_session_status(storage: Storage, session_id: str) -> SessionStatus | None:
    """The supervisor's last report, None when there is none yet; CorruptRecord when the object
    is not a status (bucket content is untrusted: a rented host writes it)."""
    key = status_key(session_id)
    try:
        data = read_json_record(storage, key)
    except ObjectNotFound:
        return None
    if not isinstance(data, dict) or data.get("session_id") != session_id:
        raise CorruptRecord(f"{key} is not the status of session {session_id}")
    try:
        status = SessionStatus.from_dict(data)
        for name in ("updated_at", "idle_s", "started_at"):
            value = getattr(status, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or value != value or abs(value) == float("inf")):
                raise ValueError(name)
    except (TypeError, ValueError) as exc:
        raise CorruptRecord(f"{key} has a bad field ({exc})") from None
    return status


class SessionReporter:
    """Writes ``sessions/<id>/status.json`` (the supervisor's side)."""

    def __init__(self, storage: Storage, session_id: str, clock: Callable[[], float] = time.time):
        self.storage, self.clock = storage, clock
        self.status = SessionStatus(session_id=session_id, state=SessionState.STARTING, started_at=clock(),
                                    updated_at=clock())

    def update(self, **fields: Any) -> SessionStatus:
        for k, v in fields.items():
            setattr(self.status, k, v)
        if not isinstance(self.status.state, SessionState):
            self.status.state = SessionState(self.status.state)
        self.status.updated_at = self.clock()
        self.storage.write_bytes(status_key(self.status.session_id),
                                 json.dumps(self.status.to_dict(), sort_keys=True).encode(),
                                 content_type="application/json")
        return self.status


def end_session_in_bucket(storage: Storage, session_id: str, state: SessionState, message: str) -> None:
    """Tell every reader that the session ended (the controller stopped it, or the guard did),
    unless its supervisor reported an end first."""
    try:
        current = read_session_status(storage, session_id)
    except CorruptRecord:
        current = None
    if current is not None and current.state.is_terminal:
        return
    status = current or SessionStatus(session_id=session_id)
    status.state, status.message, status.updated_at = state, message, time.time()
    storage.write_bytes(status_key(session_id), json.dumps(status.to_dict(), sort_keys=True).encode(),
                        content_type="application/json")
