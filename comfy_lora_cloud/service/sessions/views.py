"""What a session looks like to the CLI, the sidebar and the events: its record, whether it is
live, its deadline, its cost so far (the ledger's figure, as for every instance), its image's
last report and this process's tunnel to it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from ...errors import CorruptRecord, LoraCloudError, StorageError
from ...models import Problem, Session, SessionStatus
from ...training import inference
from ..home import SESSION_COLUMNS, row_to_session, salvage
from ..money import CostLedger
from .store import first_seen

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionView:
    """A session as the edges see it: its record's fields (``state`` as its value, or
    ``damaged`` when a damaged record's state cannot be read), whether it is live, its deadline,
    its cost and seconds up (the ledger's figures), its image's last report (``remote``), this
    process's tunnel to it (``url`` while it answers, ``tunnel``: the tunnel's state) and, for a
    record that cannot be read whole, why (``damaged``)."""

    id: str
    state: str
    provider: str
    instance_id: str | None
    gpu: str
    dph: float
    idle_minutes: float
    max_hours: float
    precision: str
    remote_port: int
    ssh_host: str | None
    ssh_port: int | None
    created_at: float
    updated_at: float
    ready_at: float | None
    error: str | None
    live: bool
    deadline: float
    cost_usd: float
    uptime_seconds: float
    remote: SessionStatus | None
    url: str | None
    tunnel: str | None
    damaged: str | None = None  # only a damaged record's view has it (and says so in its JSON)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "state": self.state, "provider": self.provider, "instance_id": self.instance_id,
            "gpu": self.gpu, "dph": self.dph, "idle_minutes": self.idle_minutes, "max_hours": self.max_hours,
            "precision": self.precision, "remote_port": self.remote_port, "ssh_host": self.ssh_host,
            "ssh_port": self.ssh_port, "created_at": self.created_at, "updated_at": self.updated_at,
            "ready_at": self.ready_at, "error": self.error, "live": self.live, "deadline": self.deadline,
            "cost_usd": self.cost_usd, "uptime_seconds": self.uptime_seconds,
            "remote": self.remote.to_dict() if self.remote is not None else None, "url": self.url,
            "tunnel": self.tunnel}
        if self.damaged is not None:
            out["damaged"] = self.damaged
        return out


@dataclass(frozen=True)
class StartedSession:
    """What a start answers: the session's view; ``attached``: a live session already existed and
    nothing was rented (then ``expected_max_usd`` is None: no new spend was judged)."""

    view: SessionView
    attached: bool
    expected_max_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {**self.view.to_dict(), "attached": self.attached}
        if not self.attached:
            out["expected_max_usd"] = self.expected_max_usd
        return out


@dataclass(frozen=True)
class StoppedSession:
    """What a stop answers: the session's view once ended, and the instances destroyed."""

    view: SessionView
    destroyed_instances: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.view.to_dict(), "destroyed_instances": list(self.destroyed_instances)}


def session_view(core: Core, session: Session, tunnel: Any | None) -> SessionView:
    """The view of ``session``; ``tunnel``: this process's tunnel to it, if any. Blocking."""
    now = core.clock()
    live = not session.state.is_terminal
    cost_usd, uptime_seconds = session_cost(core, session, now)
    status = None
    if live:  # an ended session's last report is in its record already
        try:
            status = inference.read_session_status(core.storage, session.id)
        except (StorageError, LoraCloudError):
            status = None
    alive = tunnel is not None and tunnel.alive and live
    return SessionView(
        id=session.id, state=session.state.value, provider=session.provider, instance_id=session.instance_id,
        gpu=session.gpu, dph=session.dph, idle_minutes=session.idle_minutes, max_hours=session.max_hours,
        precision=session.precision, remote_port=session.remote_port, ssh_host=session.ssh_host,
        ssh_port=session.ssh_port, created_at=session.created_at, updated_at=session.updated_at,
        ready_at=session.ready_at, error=session.error, live=live,
        deadline=session.created_at + session.max_hours * 3600, cost_usd=cost_usd, uptime_seconds=uptime_seconds,
        remote=status, url=tunnel.url if alive else None,
        tunnel=tunnel.state if tunnel is not None and live else None)


def session_cost(core: Core, session: Session, now: float) -> tuple[float, float]:
    """Spent so far (the ledger's figure, as for every instance) and seconds up."""
    if not session.instance_id:
        return 0.0, 0.0
    rows = [r for r in core.state.list_instances(include_destroyed=True)
            if r["id"] == session.instance_id and r["provider"] == session.provider]
    if not rows:
        return 0.0, 0.0
    row = rows[0]
    end = row.get("destroyed_at") or now
    if row["state"] == "destroyed":
        spent = CostLedger(core.state, core.clock).instance_usd(row["id"])
    else:
        spent = CostLedger(core.state, core.clock).live_usd(
            row["id"], row["state"], row["dph_total"], row["storage_dph"], row["created_at"], now)
    return round(spent, 4), max(0.0, end - row["created_at"])


def list_views(core: Core, limit: int, view_of: Callable[[Session], SessionView]) -> list[SessionView]:
    """The views of the newest ``limit`` sessions recorded here. A row that cannot be read is
    listed too, as damaged (``damaged``: why; what can be read of it), never left out silently
    nor a failed listing. Blocking."""
    found: list[tuple[Session, str, bool]] = []  # (session, why it is damaged, its state unreadable)
    for row in core.state.session_rows():
        try:
            found.append((row_to_session(row), "", False))
        except CorruptRecord as exc:
            log.warning("%s", exc.message)
            session, wrong = salvage(row, born=core.clock())
            fields = {w.split(" ", 1)[0] for w in wrong}
            if "created_at" in fields:
                session.created_at = first_seen(core.state, session.provider, session.instance_id) \
                    or session.created_at
            unreadable = bool(wrong) and not fields & set(SESSION_COLUMNS)  # not JSON, or not an object
            found.append((session, exc.message, "state" in fields or unreadable))
    found.sort(key=lambda f: f[0].created_at, reverse=True)
    views = []
    for session, damaged, unknown_state in found[:limit]:
        view = view_of(session)
        if damaged:
            view = replace(view, damaged=damaged, error=damaged, state="damaged" if unknown_state else view.state)
        views.append(view)
    return views


@dataclass(frozen=True)
class GeneratedImage:
    """One image a generation sent back: its name on the remote side, its bytes and, when the
    caller asked for them on disk, where they were written."""

    filename: str
    subfolder: str
    node: str
    data: bytes
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"filename": self.filename, "subfolder": self.subfolder, "node": self.node,
                               "data": self.data}
        if self.path is not None:
            out["path"] = self.path
        return out


@dataclass(frozen=True)
class Generation:
    """A workflow run on a session's ComfyUI: its prompt id, how long it took, its images and the
    canvas nodes the conversion left out (``ignored``)."""

    session: str
    prompt_id: str
    seconds: float
    images: tuple[GeneratedImage, ...]
    ignored: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"session": self.session, "prompt_id": self.prompt_id, "seconds": self.seconds,
                "images": [i.to_dict() for i in self.images], "ignored": list(self.ignored)}


@dataclass(frozen=True)
class GalleryImage:
    """An image a remote session pushed to the bucket's ``outputs/<session>/``."""

    session: str
    file: str
    size: int
    updated: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"session": self.session, "file": self.file, "size": self.size, "updated": self.updated}


@dataclass(frozen=True)
class Gallery:
    """The newest outputs, and the entries left out (a name no route could serve, not an image)."""

    outputs: tuple[GalleryImage, ...]
    problems: tuple[Problem, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"outputs": [o.to_dict() for o in self.outputs], "problems": [p.to_dict() for p in self.problems]}
