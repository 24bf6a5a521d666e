"""Who owns a labelled instance: the one place that decides whether reconcile may destroy it.

Two witnesses speak about the run a label names:

* this controller's state store (``Run`` row): live, ended, absent, a row that cannot be read,
  or a store that cannot be read at all;
* the bucket (``runs/<id>/status.json``, :func:`bucket_view`): what the run's trainer (or the
  controller that launched it, on another machine) last reported.

:func:`decide` turns them into one of three verdicts. ``OWNED``: a live run owns it, keep it.
``UNOWNED``: nothing live owns it, destroy it once it has been unowned for the grace period.
``DOUBT``: a witness could not be read, keep it and report (never destroy on doubt; the
budgets still bound what it can cost). In order:

1. a damaged store -> DOUBT (we cannot match the instance to an owner);
2. the trainer reported an end (done, failed, ...) -> UNOWNED, whatever the store says: a
   trainer whose self-destroy failed must not bill on;
3. a live run in the store -> OWNED;
4. a run row that cannot be read -> DOUBT;
5. the bucket reports a live state recently (another controller's run) -> OWNED;
6. the bucket cannot be read, or its status is not a status -> DOUBT;
7. otherwise (no run anywhere, a run that ended here, a live report gone stale) -> UNOWNED.

"Recently" is judged on this controller's clock: the status's own ``updated_at`` (the trainer
host's clock) or, when that looks old or claims a time more than :data:`CLOCK_AHEAD_S` ahead of
ours, the object's write time in the bucket. A host whose clock runs hours behind therefore cannot
make a live run look stale, and a status dated in the future (a hostile host keeping an instance
alive) is only as fresh as its last write.

A remote ComfyUI session's instance (label ``lora-cloud:session:<id>``) is owned by the same
rules, with the session's record and ``sessions/<id>/status.json`` as the witnesses
(:func:`decide_session`, :func:`session_bucket_view`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, CorruptRecord, StorageError
from ..models import Run, RunState, RunStatus, Session, validate_name
from ..storage.base import Storage
from ..storage.layout import run_key
from ..training.status import STATUS, read_status


class Bucket(str, enum.Enum):
    ABSENT = "absent"  # no status.json
    LIVE = "live"  # a live state, reported recently
    STALE = "stale"  # a live state, not reported for fresh_s
    ENDED = "ended"  # a terminal state
    CORRUPT = "corrupt"  # a status.json that is not a status
    UNREADABLE = "unreadable"  # the bucket did not answer


@dataclass(frozen=True)
class BucketView:
    kind: Bucket
    status: RunStatus | None = None
    reason: str = ""


CLOCK_AHEAD_S = 3600.0  # a trainer host's clock up to an hour ahead of ours is believed


def bucket_view(storage: Storage, run_id: str, now: float, fresh_s: float) -> BucketView:
    """What the bucket says about ``run_id`` (blocking: call it in a thread)."""
    return _view(storage, lambda: read_status(storage, run_id), run_key(run_id, STATUS), now, fresh_s)


def _view(storage: Storage, read: Callable[[], Any], key: str, now: float, fresh_s: float) -> BucketView:
    """The one freshness rule, for a run's or a session's ``status.json`` (``read`` parses it)."""
    try:
        status = read()
    except CorruptRecord as exc:
        return BucketView(Bucket.CORRUPT, reason=exc.message)
    except StorageError as exc:
        return BucketView(Bucket.UNREADABLE, reason=exc.message)
    if status is None:
        return BucketView(Bucket.ABSENT)
    if status.state.is_terminal:
        return BucketView(Bucket.ENDED, status)
    if now - fresh_s <= status.updated_at <= now + CLOCK_AHEAD_S:
        return BucketView(Bucket.LIVE, status)
    try:
        written = storage.stat(key).updated
    except StorageError as exc:
        return BucketView(Bucket.UNREADABLE, status, exc.message)
    if written is not None and written >= now - fresh_s:
        return BucketView(Bucket.LIVE, status)
    return BucketView(Bucket.STALE, status)


class Verdict(str, enum.Enum):
    OWNED = "owned"
    UNOWNED = "unowned"
    DOUBT = "doubt"


@dataclass(frozen=True)
class Local:
    """What this controller's store says about a run: ``run`` when readable, ``corrupt`` (the
    row's problem) when the row is not, ``damaged`` when the store itself is not."""

    run: Run | None = None
    corrupt: str = ""
    damaged: str = ""


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    why: str
    ended: RunState | None = None  # the end its trainer reported, for the store to record


def decide(run_id: str | None, local: Local, bucket: BucketView | None) -> Decision:
    """The verdict for one instance whose label names ``run_id`` (see the module docstring)."""
    if run_id is None or not is_run_id(run_id):
        return Decision(Verdict.UNOWNED, "its label names no run this pack could have made")
    return _decide("run", run_id, local.run, local.corrupt, local.damaged, bucket, "its trainer", report_end=True)


def _decide(noun: str, ident: str, record: Any, corrupt: str, damaged: str, bucket: BucketView | None,
            reporter: str, *, report_end: bool = False) -> Decision:
    """The rules of the module docstring, for a run or a session (``record``: this store's)."""
    if damaged:
        return Decision(Verdict.DOUBT, f"the state store cannot be read ({damaged})")
    assert bucket is not None
    if bucket.kind is Bucket.ENDED:
        assert bucket.status is not None
        state = bucket.status.state
        return Decision(Verdict.UNOWNED, f"{reporter} reported {state.value}", state if report_end else None)
    if record is not None and not record.state.is_terminal:
        return Decision(Verdict.OWNED, f"{noun} {ident} is live here")
    if corrupt:
        return Decision(Verdict.DOUBT, f"the record of {noun} {ident} cannot be read ({corrupt})")
    if bucket.kind is Bucket.LIVE:
        return Decision(Verdict.OWNED, f"{noun} {ident} is live in the bucket (another controller's)")
    if bucket.kind in (Bucket.CORRUPT, Bucket.UNREADABLE):
        return Decision(Verdict.DOUBT, f"the bucket cannot vouch for {noun} {ident}: {bucket.reason}")
    if record is not None:
        return Decision(Verdict.UNOWNED, f"{noun} {ident} ended here ({record.state.value})")
    if bucket.kind is Bucket.STALE:
        return Decision(Verdict.UNOWNED, f"{noun} {ident} has not reported for a long time")
    return Decision(Verdict.UNOWNED, f"no {noun} {ident} is known here or in the bucket")


def is_run_id(run_id: str) -> bool:
    try:
        validate_name(run_id, "run id")
    except ConfigError:
        return False
    return True


# ---- sessions (remote ComfyUI) -----------------------------------------------------------------
@dataclass(frozen=True)
class LocalSession:
    """What this controller's store says about a session (as :class:`Local` does for a run)."""

    session: Session | None = None
    corrupt: str = ""
    damaged: str = ""


def session_bucket_view(storage: Storage, session_id: str, now: float, fresh_s: float) -> BucketView:
    """What ``sessions/<id>/status.json`` says (blocking). ``status`` is the session's status."""
    from ..training.inference import read_session_status, status_key

    return _view(storage, lambda: read_session_status(storage, session_id), status_key(session_id), now, fresh_s)


def decide_session(session_id: str | None, local: LocalSession, bucket: BucketView | None) -> Decision:
    """The verdict for one instance labelled with ``session_id``: the rules of :func:`decide`."""
    if session_id is None or not is_run_id(session_id):
        return Decision(Verdict.UNOWNED, "its label names no session this pack could have made")
    return _decide("session", session_id, local.session, local.corrupt, local.damaged, bucket, "its ComfyUI")
