"""The records every layer shares. Plain dataclasses: easy to build in tests, easy to JSON."""

from __future__ import annotations

import dataclasses
import enum
import math
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")

MAX_NAME = 100
MAX_TRIGGER = 200  # a trigger word is a word or a short phrase, placed in every caption
_NAME_PUNCT = frozenset("._- ")


def _name_char_ok(c: str, first: bool) -> bool:
    """A letter or digit of any script (Unicode categories L and N); after the first character
    also a combining mark (M: accents, vowel signs) or one of ``. _ -`` and the plain space."""
    cat = unicodedata.category(c)
    if cat[0] in "LN":
        return True
    return not first and (cat[0] == "M" or c in _NAME_PUNCT)


def validate_name(name: str, kind: str = "name") -> str:
    """Check a user-chosen dataset / LoRA / run name and return it, NFC-normalised (``café``
    typed on a Mac and on Linux is one name).

    Allowed: letters and digits of any script, ``.``, ``_``, ``-`` and spaces, starting with a
    letter or digit, at most 100 characters. So no ``..``, no slashes or backslashes, no control
    or invisible format characters (zero-width, right-to-left overrides), nothing that could
    escape a prefix or a folder. Callers use the returned value.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{kind} must be a non-empty string")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"{kind} {name!r} must not contain control characters")
    name = unicodedata.normalize("NFC", name)
    if name != name.strip():
        raise ConfigError(f"{kind} {name!r} has leading or trailing spaces")
    if ".." in name or "/" in name or "\\" in name:
        raise ConfigError(f"{kind} {name!r} must not contain '..', '/' or '\\'")
    if len(name) > MAX_NAME or not all(_name_char_ok(c, i == 0) for i, c in enumerate(name)):
        raise ConfigError(
            f"{kind} {name!r} may use only letters, digits, '.', '_', '-' and spaces "
            f"(starting with a letter or digit, at most {MAX_NAME} characters)"
        )
    return name


def check_trigger(trigger: Any) -> str | None:
    """A trigger word as every edge takes it (the CLI's ``--trigger``, the sidebar's upload and
    config editor): one printable line of at most :data:`MAX_TRIGGER` characters, stripped; None
    for none."""
    if trigger is None or trigger == "":
        return None
    if not isinstance(trigger, str) or len(trigger) > MAX_TRIGGER or not trigger.strip() \
            or not trigger.isprintable():
        raise ConfigError(f"the trigger word must be one line of at most {MAX_TRIGGER} printable characters")
    return trigger.strip()


#: the largest whole number a count, a size or a port may be: what JavaScript (the sidebar) and a
#: float (our arithmetic) both hold exactly
MAX_EXACT_INT = 2 ** 53


def as_finite(value: Any) -> float | None:
    """``value`` as a finite float (a number, or text that reads as one), or None: a bool, other
    text, NaN, inf, None. For records written by others (a provider's answer, a state row)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def is_number(value: Any) -> bool:
    """A real number we can do arithmetic with: an int or float (never a bool), finite, and an
    int no bigger than :data:`MAX_EXACT_INT` (``float(10**400)`` raises in the middle of a sum)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_EXACT_INT <= value <= MAX_EXACT_INT
    return isinstance(value, float) and math.isfinite(value)


def check_number(name: str, value: Any, low: float, high: float, *, above: bool = False,
                 integer: bool = False) -> Any:
    """``value`` when it is a number in ``[low, high]`` (``(low, high]`` with ``above``), a whole one
    with ``integer``; else a :class:`ConfigError` naming ``name`` and the range. The one range
    check for a number from a body, a file, the bucket or a flag, before any arithmetic."""
    kind = "a whole number" if integer else "a number"
    bounds = f"{'above' if above else 'at least'} {low:g} and at most {high:g}"
    if not is_number(value) or (integer and isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{name} must be {kind} {bounds}, not {shown(value)}")
    if not (low < value if above else low <= value) or value > high:
        raise ConfigError(f"{name} must be {bounds}, not {shown(value)}")
    return int(value) if integer else value


def shown(value: Any) -> str:
    """A value as an error shows it: short, whatever it is (a 401-digit integer is not printed)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_EXACT_INT:
        return f"an integer of {len(str(abs(value))) if value.bit_length() < 4000 else 'over 1200'} digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Record:
    """Mixin: ``to_dict``/``from_dict`` that ignore unknown keys (forward compatible)."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, enum.Enum) else v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


class RunState(str, enum.Enum):
    PENDING = "pending"  # intent recorded, nothing rented yet
    LAUNCHING = "launching"  # instance requested
    STARTING = "starting"  # instance up, trainer preparing (dataset, weights)
    TRAINING = "training"
    UPLOADING = "uploading"
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"  # stopped by the user
    LOST = "lost"  # the instance vanished and no status says why
    # the instance was stopped under the run (outbid, or exited while we want it running): not an
    # end. The guard's recovery (service/runs/recovery.py) resumes it in place or on a new instance, from
    # the bucket's last checkpoint, until it is done or stops for good (budget, max attempts)
    PREEMPTED = "preempted"

    @property
    def is_terminal(self) -> bool:
        return self in (RunState.DONE, RunState.FAILED, RunState.TIMED_OUT, RunState.STOPPED, RunState.LOST)

    @property
    def is_launching(self) -> bool:
        """Nothing rented yet, or an instance asked for and not yet recorded: the states a crash
        can leave behind mid-launch."""
        return self in (RunState.PENDING, RunState.LAUNCHING)


class InstanceState(str, enum.Enum):
    CREATING = "creating"
    LOADING = "loading"
    RUNNING = "running"
    STOPPED = "stopped"
    EXITED = "exited"
    OFFLINE = "offline"
    DESTROYED = "destroyed"
    UNKNOWN = "unknown"


@dataclass
class Offer(Record):
    id: int | str
    gpu_name: str
    num_gpus: int = 1
    gpu_ram_gb: float = 0.0
    cpu_ram_gb: float = 0.0
    disk_gb: float = 0.0
    dph_total: float = 0.0  # $/hr for the whole machine, on-demand (or the bid for interruptible)
    storage_cost_per_gb_month: float = 0.0
    inet_down_mbps: float = 0.0
    inet_up_mbps: float = 0.0
    reliability: float = 0.0
    verified: bool = False
    interruptible: bool = False
    min_bid: float | None = None
    cuda_max_good: float | None = None
    geolocation: str = ""
    provider: str = "vast"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Instance(Record):
    id: int | str
    provider: str = "vast"
    label: str = ""
    state: InstanceState = InstanceState.UNKNOWN
    intended_state: str = "running"
    gpu_name: str = ""
    num_gpus: int = 1
    dph_total: float = 0.0
    storage_dph: float = 0.0
    created_at: float = 0.0
    started_at: float | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    status_msg: str = ""
    interruptible: bool = False
    run_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    session_id: str | None = None  # a remote ComfyUI session's instance (label lora-cloud:session:<id>)


@dataclass
class RunStatus(Record):
    """What the trainer writes to ``runs/<run_id>/status.json``."""

    run_id: str
    state: RunState = RunState.PENDING
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    total_epochs: int = 0
    loss: float | None = None
    sec_per_step: float | None = None
    eta_seconds: float | None = None
    last_checkpoint: str | None = None
    lora: str | None = None
    error: str | None = None
    message: str = ""
    updated_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not isinstance(self.state, RunState):
            self.state = RunState(self.state)


@dataclass
class Run(Record):
    id: str
    dataset: str
    preset: str
    lora_name: str
    config_hash: str = ""
    state: RunState = RunState.PENDING
    provider: str = "vast"
    instance_id: str | None = None
    gpu: str = ""
    dph: float = 0.0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    error: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.state, RunState):
            self.state = RunState(self.state)


@dataclass
class Dataset(Record):
    name: str
    images: int = 0
    bytes: int = 0
    captioned: int = 0
    trigger: str | None = None
    lora_type: str | None = None
    updated: float | None = None
    # True once its manifest (dataset.json) is in storage: every writer writes it last, so a
    # dataset without one is an upload that has not finished (or was killed) and cannot be trained
    complete: bool = False


@dataclass
class Lora(Record):
    name: str
    size: int = 0
    md5: str | None = None
    crc32c: str | None = None
    updated: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Cost(Record):
    """One ledger line: money spent on an instance over a span of time, or a charge."""

    instance_id: str
    run_id: str | None
    kind: str  # "gpu" | "storage" | "charge"
    usd: float
    start: float
    end: float
    source: str = "estimate"  # "estimate" | "charges"
    seq: int | None = None  # its row number in the state store's ledger (to name it in a report)


@dataclass
class Problem(Record):
    """An entry a listing skipped (or read only in part) because it could not be read as what
    it should be. Bucket content is untrusted input: one bad object must not hide the others."""

    entry: str  # the bucket key or prefix, e.g. "datasets/café/" or "runs/x/status.json"
    message: str

    @classmethod
    def of(cls, entry: str, exc: BaseException) -> "Problem":
        from .errors import LoraCloudError

        message = exc.message if isinstance(exc, LoraCloudError) else f"{type(exc).__name__}: cannot be read"
        return cls(entry=entry[:300], message=message[:500])


@dataclass
class Listed(Generic[T]):
    """What a listing found, and what it had to skip. Iterates, indexes and counts like its
    ``items``, so a caller that only wants what was found can treat it as the list."""

    items: list[T] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    total: int | None = None  # entries in the whole listing, when ``items`` is one page of it

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)


# ---- remote ComfyUI sessions -------------------------------------------------------------------
class SessionState(str, enum.Enum):
    LAUNCHING = "launching"  # intent recorded, create sent
    STARTING = "starting"  # instance rented: booting, getting weights, starting ComfyUI
    READY = "ready"  # ComfyUI answers
    STOPPED = "stopped"  # stopped by the user
    IDLE = "idle"  # destroyed after its idle minutes (by the image or the guard)
    TIMED_OUT = "timed_out"  # destroyed at its max hours
    FAILED = "failed"
    LOST = "lost"  # the instance vanished and no status says why

    @property
    def is_terminal(self) -> bool:
        return self in (SessionState.STOPPED, SessionState.IDLE, SessionState.TIMED_OUT, SessionState.FAILED,
                        SessionState.LOST)


@dataclass
class Session(Record):
    """A remote ComfyUI on a rented GPU, as this controller records it (state store)."""

    id: str
    state: SessionState = SessionState.LAUNCHING
    provider: str = "vast"
    instance_id: str | None = None
    gpu: str = ""
    dph: float = 0.0
    idle_minutes: float = 20.0
    max_hours: float = 4.0
    precision: str = "fp8"
    remote_port: int = 8188
    ssh_host: str | None = None
    ssh_port: int | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, SessionState):
            self.state = SessionState(self.state)

    @classmethod
    def from_record(cls, data: Any, *, max_hours: float,
                    fallback: dict[str, Any] | None = None) -> "tuple[Session, list[str]]":
        """A stored record checked field by field, as a run's row is: ``(session, wrong)``, where
        ``wrong`` names each field that is not what it should be ("max_hours is '4', not a
        number"). A wrong field takes ``fallback[name]`` when given, else its default, so a
        caller that must still act on a damaged record (the guard enforcing its hours) can; a
        caller that must not (``row_to_session``) refuses any ``wrong``. ``max_hours``: the most a
        session may have (the settings' ceiling). The fields a guard needs (id, state, created_at,
        max_hours) must be there; the others default when missing (older records)."""
        fallback = fallback or {}
        if not isinstance(data, dict):
            return cls(**{"id": "?", **fallback}), [f"a JSON {type(data).__name__}, not an object"]
        wrong: list[str] = []
        clean: dict[str, Any] = {}
        for name, check in _session_checks(max_hours).items():
            if name not in data:
                if name in _SESSION_REQUIRED:
                    wrong.append(f"{name} is missing")
                continue
            value = data[name]
            if check(value):
                clean[name] = float(value) if name in _SESSION_FLOATS and value is not None else value
            else:
                wrong.append(f"{name} is {shown(value)}, {_SESSION_WANTS[name]}")
        bad = {w.split(" ", 1)[0] for w in wrong}
        clean.update({k: v for k, v in fallback.items() if k in bad})
        clean.setdefault("id", str(fallback.get("id", "?")))
        return cls(**clean), wrong


def _is_time(value: Any) -> bool:
    return is_number(value) and 0 <= value < 1e11  # 1e11 s is the year 5138: not a clock, a payload


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _session_checks(max_hours: float) -> dict[str, Any]:
    text = lambda v: isinstance(v, str)  # noqa: E731
    text_or_none = lambda v: v is None or isinstance(v, str)  # noqa: E731
    return {
        "id": lambda v: isinstance(v, str) and bool(v), "state": lambda v: v in {s.value for s in SessionState},
        "provider": text, "instance_id": text_or_none, "gpu": text, "precision": text,
        "ssh_host": text_or_none, "error": text_or_none,
        "dph": lambda v: is_number(v) and v >= 0, "idle_minutes": lambda v: is_number(v) and v > 0,
        "max_hours": lambda v: is_number(v) and 0 < v <= max_hours,
        "remote_port": _is_port, "ssh_port": lambda v: v is None or _is_port(v),
        "created_at": _is_time, "updated_at": _is_time, "ready_at": lambda v: v is None or _is_time(v),
    }


_SESSION_REQUIRED = frozenset({"id", "state", "created_at", "max_hours"})
_SESSION_FLOATS = frozenset({"dph", "idle_minutes", "max_hours", "created_at", "updated_at", "ready_at"})
_SESSION_WANTS = {
    "id": "not a session id", "state": "not a session state", "provider": "not text", "instance_id": "not text",
    "gpu": "not text", "precision": "not text", "ssh_host": "not text", "error": "not text",
    "dph": "not a price", "idle_minutes": "not a number of minutes above 0",
    "max_hours": "not a number of hours in range", "remote_port": "not a port", "ssh_port": "not a port",
    "created_at": "not a time", "updated_at": "not a time", "ready_at": "not a time",
}


@dataclass
class SessionStatus(Record):
    """What the inference image's supervisor writes to ``sessions/<id>/status.json``."""

    session_id: str
    state: SessionState = SessionState.STARTING
    message: str = ""
    started_at: float | None = None
    idle_s: float = 0.0  # seconds since the last prompt ran (or since ComfyUI was ready)
    idle_limit_s: float | None = None
    deadline: float | None = None
    outputs: int = 0
    loras: int = 0
    error: str | None = None
    updated_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not isinstance(self.state, SessionState):
            self.state = SessionState(self.state)
