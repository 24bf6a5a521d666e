"""What a session looks like to the CLI, the sidebar and the events: its record, whether it is
live, its deadline, its cost so far (the ledger's figure, as for every instance), its image's
last report and this process's tunnel to it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from ...errors import CorruptRecord, LoraCloudError, StorageError
from ...models import Session
from ...training import inference
from ..home import SESSION_COLUMNS, row_to_session, salvage
from ..money import CostLedger
from .store import first_seen

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger(__name__)


def session_view(core: Core, session: Session, tunnel: Any | None) -> dict[str, Any]:
    """The view of ``session``; ``tunnel``: this process's tunnel to it, if any. Blocking."""
    now = core.clock()
    view = {k: v for k, v in session.to_dict().items()}
    view["live"] = not session.state.is_terminal
    view["deadline"] = session.created_at + session.max_hours * 3600
    view["cost_usd"], view["uptime_seconds"] = session_cost(core, session, now)
    status = None
    if view["live"]:  # an ended session's last report is in its record already
        try:
            status = inference.read_session_status(core.storage, session.id)
        except (StorageError, LoraCloudError):
            status = None
    view["remote"] = status.to_dict() if status else None
    alive = tunnel is not None and tunnel.alive and view["live"]
    view["url"] = tunnel.url if alive else None
    view["tunnel"] = tunnel.state if tunnel is not None and view["live"] else None
    return view


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


def list_views(core: Core, limit: int, view_of: Callable[[Session], dict[str, Any]]) -> list[dict[str, Any]]:
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
            view.update(damaged=damaged, error=damaged)
            if unknown_state:
                view["state"] = "damaged"
        views.append(view)
    return views
