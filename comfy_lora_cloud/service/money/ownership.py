"""Who owns a labelled instance: the one place that decides whether the guard may touch it.

**Whose is it (attribution).** A home judges only instances of its own bucket, the one it can
read: another bucket's run is invisible to it, and "no record here" is then no proof of
anything. :func:`attribute` sorts each labelled instance into

* ``OURS``: its id carries this bucket's id (``providers/base.py``: ``<id>.b<bucket id>``), or
  it carries none (launched before ids were tagged) and its run/session is in this home's state
  store or has a record in this bucket. Only these are judged below, adopted, ended, and held to
  the budgets;
* ``FOREIGN``: its id carries another bucket's id: kept, reported ("belongs to another bucket");
  its own home guards it;
* ``UNKNOWN``: it cannot be told (an untagged id known neither here nor in the bucket, a bucket
  that cannot be read, a bucket id that cannot be read): kept and reported, never destroyed;
* ``NONE``: the label names no run or session any version of this pack could have made
  (``lora-cloud:``, ``lora-cloud:../../etc``): nobody's, judged as unowned.

The ids a bucket answers to (:func:`own_bucket_ids`) are the one in the bucket plus every one
this home read from the same storage before (kept in its state store), so a bucket whose id
object is deleted or rewritten (a rented host can write the bucket) does not make the home
stop guarding its own runs.

**Does a live run own it.** Two witnesses speak about the run a label names:

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
6. the bucket cannot be read, its status is not a status, or how recent the report is cannot
   be judged this pass -> DOUBT;
7. otherwise (no run anywhere, a run that ended here, a live report gone stale) -> UNOWNED.

"Recently" is judged on the bucket's clock alone: the status object's write time (put there by
the storage service) against the bucket's "now" (:class:`BucketFacts`, learnt once a pass with
a write of our own, ``storage/identity.py``). Neither this machine's clock nor the
host-written ``updated_at`` takes part, so a fast laptop clock cannot make a live run look
silent, and a status dated in the future (a hostile host) is only as fresh as its last write.
When the bucket's time cannot be learnt nothing is judged stale that pass.

A remote ComfyUI session's instance (label ``lora-cloud:session:<id>``) is owned by the same
rules, with the session's record and ``sessions/<id>/status.json`` as the witnesses
(:func:`decide_session`, :func:`session_bucket_view`).
"""

from __future__ import annotations

import enum
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ...errors import ConfigError, CorruptRecord, LoraCloudError, StorageError
from ...models import Instance, Run, RunState, RunStatus, Session, validate_name
from ...providers.base import bucket_tag
from ...storage.base import Storage
from ...storage.identity import ID_KEY, ensure_bucket_id, is_bucket_id, read_bucket_id
from ...storage.layout import run_key
from ...training.status import STATUS, read_status

log = logging.getLogger(__name__)

#: a clock this far from the bucket's is reported (freshness is judged on the bucket's anyway)
CLOCK_SKEW_S = 300.0
_IDS_KEY = "bucket:ids:"  # + storage url -> the ids this home read from that storage (JSON list)


class Bucket(str, enum.Enum):
    ABSENT = "absent"  # no status.json
    LIVE = "live"  # a live state, reported recently
    STALE = "stale"  # a live state, not reported for fresh_s
    UNDATED = "undated"  # a live state, but how recent cannot be judged this pass
    ENDED = "ended"  # a terminal state
    CORRUPT = "corrupt"  # a status.json that is not a status
    UNREADABLE = "unreadable"  # the bucket did not answer


@dataclass(frozen=True)
class BucketView:
    kind: Bucket
    status: RunStatus | None = None
    reason: str = ""


# ---- the bucket this pass: its ids and its clock -----------------------------------------------
@dataclass(frozen=True)
class BucketFacts:
    """What a guard pass knows about its own bucket: the ids it answers to (empty with
    ``id_problem`` when they cannot be read) and its time (None with ``clock_problem``)."""

    url: str = ""
    ids: frozenset[str] = frozenset()
    id_problem: str = ""
    now: float | None = None
    clock_problem: str = ""
    skew_s: float | None = None  # this machine's clock minus the bucket's


def own_bucket_ids(storage: Storage, state: Any) -> tuple[frozenset[str], str]:
    """The ids this bucket answers to, and a problem to report ('' when none): the ids this home
    read from the same storage before, else (first contact) the one in the bucket. A bucket with
    no id gets back the one this home remembers (its id object was deleted); a guard pass never
    makes up a new one.

    An id that changed under a home that remembers another is reported and NOT adopted: a rented
    host can write the bucket, and an id it copied from another bucket would otherwise make that
    bucket's instances look like ours, unknown to us, and so destroyed. Instances tagged with the
    new id are kept (the worst it can cost is a run this home does not judge), never the reverse."""
    key = _IDS_KEY + storage.url
    remembered = _remembered(state, key)
    try:
        current = read_bucket_id(storage)
        if current is None and remembered:
            current = ensure_bucket_id(storage, prefer=remembered[-1])
    except Exception as exc:  # noqa: BLE001 - whatever the storage raised, the id is unknown, not a crash
        if remembered:  # ours still: ids this home read from this very storage
            return frozenset(remembered), ""
        return frozenset(), f"the bucket's id cannot be read: {_reason(exc)}"
    if current is not None and current not in remembered:
        if remembered:
            return frozenset(remembered), (f"the bucket's id ({ID_KEY}) reads {current}, not the {remembered[-1]} "
                                           "this home knows it by; instances tagged with the new id are kept, not "
                                           "judged. Put the old id back if nobody meant to change it")
        _remember(state, key, [current])
        remembered = [current]
    return frozenset(remembered), ""


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, LoraCloudError) else f"{type(exc).__name__}: {exc}"


def launch_bucket_id(storage: Storage, state: Any) -> str:
    """The id a launch tags its run or session with: the bucket's, made now when it has none
    (this home's remembered one first), and remembered. Raises when it cannot be read: a launch
    that cannot say where it lives must not rent."""
    key = _IDS_KEY + storage.url
    remembered = _remembered(state, key)
    current = ensure_bucket_id(storage, prefer=remembered[-1] if remembered else None)
    if remembered:  # the id this home's guard answers to, even when the bucket's changed under it
        return remembered[-1]
    _remember(state, key, [current])
    return current


def _remembered(state: Any, key: str) -> list[str]:
    try:
        raw = state.get_kv(key)
        ids = json.loads(raw) if raw else []
    except (LoraCloudError, ValueError):  # a damaged store: the bucket's own word stands
        return []
    return [i for i in ids if is_bucket_id(i)][-16:] if isinstance(ids, list) else []


def _remember(state: Any, key: str, ids: list[str]) -> None:
    try:
        state.set_kv(key, json.dumps(ids[-16:]))
    except LoraCloudError as exc:
        log.warning("could not remember the bucket's id: %s", exc.message)


#: how long a pass that keeps its memory (ComfyUI's loop) reuses the bucket's time it learnt,
#: counting on from it with this machine's monotonic clock (one write per this, not per pass)
BUCKET_CLOCK_EVERY_S = 300.0


def learn_bucket(storage: Storage, state: Any, *, clock: Callable[[], float] = time.time,
                 memory: Any | None = None, monotonic: Callable[[], float] = time.monotonic) -> BucketFacts:
    """This pass's :class:`BucketFacts` (blocking: call it in a thread). ``memory`` (the guard's,
    with a ``bucket_time`` slot) keeps the bucket's time for :data:`BUCKET_CLOCK_EVERY_S`."""
    from ...storage.identity import bucket_time

    ids, id_problem = own_bucket_ids(storage, state)
    mono = monotonic()
    known = getattr(memory, "bucket_time", None)
    try:
        if known is None or known[0] != storage.url or not 0 <= mono - known[2] < BUCKET_CLOCK_EVERY_S:
            known = (storage.url, bucket_time(storage, clock), mono)
    except Exception as exc:  # noqa: BLE001 - whatever the storage raised, the time is unknown, not a crash
        known = None
        return BucketFacts(storage.url, ids, id_problem, None,
                           f"the bucket's clock cannot be read, so no report is judged stale this round: "
                           f"{_reason(exc)}")
    finally:
        if memory is not None:
            memory.bucket_time = known
    _, t, at = known
    return BucketFacts(storage.url, ids, id_problem, t.bucket + (mono - at), "", t.skew_s)


def skew_message(facts: BucketFacts) -> str:
    """A line about this machine's clock when it is more than :data:`CLOCK_SKEW_S` off the
    bucket's, else ''."""
    if facts.skew_s is None or abs(facts.skew_s) <= CLOCK_SKEW_S:
        return ""
    ahead = "ahead of" if facts.skew_s > 0 else "behind"
    return (f"this machine's clock is {_span(abs(facts.skew_s))} {ahead} the bucket's ({facts.url}): the guard "
            "judges reports on the bucket's clock, but fix this one (NTP: timedatectl set-ntp true)")


def report_facts(facts: BucketFacts, problems: Any) -> None:
    """The pass's problems with its own bucket: an id that cannot be read, a clock that cannot
    be read or is off the bucket's."""
    from . import problems as kinds

    if facts.id_problem:
        problems.add(kinds.BUCKET, "bucket id", facts.id_problem)
    message = facts.clock_problem or skew_message(facts)
    if message:
        problems.add(kinds.CLOCK, "clock", message)


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


# ---- whose is it ----------------------------------------------------------------------------------
class Attribution(str, enum.Enum):
    OURS = "ours"  # this bucket's: judged, adopted, ended, held to the budgets
    FOREIGN = "foreign"  # another bucket's: kept, reported
    UNKNOWN = "unknown"  # cannot be told: kept, reported
    NONE = "none"  # names no run or session this pack could make: judged as unowned


@dataclass(frozen=True)
class Attributed:
    kind: Attribution
    why: str


def attribute(noun: str, ident: str | None, facts: BucketFacts, *, known_here: Callable[[], bool | None],
              recorded: Callable[[], bool]) -> Attributed:
    """Whose an instance labelled with run/session ``ident`` is (the module docstring).
    ``known_here``: whether this home's store has it (None: the store cannot be read);
    ``recorded``: whether this bucket has a record of it (raises StorageError when unreadable)."""
    if ident is None or not is_run_id(ident):
        return Attributed(Attribution.NONE, f"its label names no {noun} this pack could have made")
    tag = bucket_tag(ident)
    if tag is not None:
        if tag in facts.ids:
            return Attributed(Attribution.OURS, f"{noun} {ident} is this bucket's")
        if facts.id_problem:
            return Attributed(Attribution.UNKNOWN, f"cannot tell whether {noun} {ident} is this bucket's: "
                                                   f"{facts.id_problem}")
        return Attributed(Attribution.FOREIGN, f"{noun} {ident} belongs to another bucket (not {facts.url}): "
                                               "kept; the home that can read its bucket guards it")
    if known_here():
        return Attributed(Attribution.OURS, f"{noun} {ident} is known here")
    try:
        if recorded():
            return Attributed(Attribution.OURS, f"{noun} {ident} has a record in this bucket")
    except (StorageError, LoraCloudError) as exc:
        return Attributed(Attribution.UNKNOWN, f"cannot tell whose {noun} {ident} is (its label predates bucket "
                                               f"ids) while the bucket cannot be read: {exc.message}")
    return Attributed(Attribution.UNKNOWN, f"{noun} {ident} is known neither here nor in {facts.url}; its label "
                                           "predates bucket ids, so it may be another bucket's: kept, never "
                                           "destroyed on that doubt")


def run_recorded(storage: Storage, run_id: str) -> bool:
    """Whether this bucket holds anything a launch writes for ``run_id`` before renting."""
    return any(storage.exists(run_key(run_id, name)) for name in (STATUS, "spec.json", "events.jsonl"))


def session_recorded(storage: Storage, session_id: str) -> bool:
    from ...training.inference import status_key

    return storage.exists(status_key(session_id))


def attribute_all(instances: Iterable[Instance], facts: BucketFacts, storage: Storage, *,
                  run_known: Callable[[str], bool | None],
                  session_known: Callable[[str], bool | None]) -> dict[str, Attributed]:
    """:func:`attribute` for every instance (blocking). One that cannot be sorted (a bug, a
    record that cannot be read) is UNKNOWN: never touched on that doubt."""
    out: dict[str, Attributed] = {}
    for inst in instances:
        try:
            if inst.session_id:
                sid = str(inst.session_id)
                out[str(inst.id)] = attribute("session", sid, facts, known_here=lambda: session_known(sid),
                                              recorded=lambda: session_recorded(storage, sid))
            else:
                rid = inst.run_id
                out[str(inst.id)] = attribute("run", rid, facts, known_here=lambda: run_known(str(rid)),
                                              recorded=lambda: run_recorded(storage, str(rid)))
        except Exception as exc:  # noqa: BLE001 - one instance must never stop the others
            out[str(inst.id)] = Attributed(Attribution.UNKNOWN, f"cannot tell whose instance {inst.id} is: "
                                                                f"{type(exc).__name__}: {exc}")
    return out


def report_attribution(attributed: dict[str, Attributed], instances: Iterable[Instance], problems: Any) -> None:
    """One problem per instance this home keeps without judging it."""
    from . import problems as kinds

    for inst in instances:
        a = attributed.get(str(inst.id))
        if a is None or a.kind not in (Attribution.FOREIGN, Attribution.UNKNOWN):
            continue
        kind = kinds.FOREIGN if a.kind is Attribution.FOREIGN else kinds.UNATTRIBUTED
        problems.add(kind, inst.id, f"instance {inst.id} (label {inst.label!r}): {a.why}")


# ---- does a live run own it ------------------------------------------------------------------------
def bucket_view(storage: Storage, run_id: str, bucket_now: float | None, fresh_s: float) -> BucketView:
    """What the bucket says about ``run_id`` (blocking: call it in a thread); ``bucket_now``: the
    bucket's time (:class:`BucketFacts`), None when unknown."""
    return _view(storage, lambda: read_status(storage, run_id), run_key(run_id, STATUS), bucket_now, fresh_s)


def _view(storage: Storage, read: Callable[[], Any], key: str, bucket_now: float | None,
          fresh_s: float) -> BucketView:
    """The one freshness rule, for a run's or a session's ``status.json`` (``read`` parses it):
    its write time against the bucket's now, both on the bucket's clock."""
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
    if bucket_now is None:
        return BucketView(Bucket.UNDATED, status, "the bucket's clock could not be read this round")
    try:
        written = storage.stat(key).updated
    except StorageError as exc:
        return BucketView(Bucket.UNREADABLE, status, exc.message)
    if written is None:
        return BucketView(Bucket.UNDATED, status, f"the bucket put no time on {key}")
    if written >= bucket_now - fresh_s:
        return BucketView(Bucket.LIVE, status)
    return BucketView(Bucket.STALE, status)


def written_at(storage: Storage, key: str) -> float | None:
    """When the storage service wrote ``key`` (its clock), or None when it cannot be read."""
    try:
        return storage.stat(key).updated
    except LoraCloudError:
        return None

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
    if bucket.kind is Bucket.UNDATED:
        return Decision(Verdict.DOUBT, f"cannot tell whether {noun} {ident} reported recently: {bucket.reason}")
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


def session_bucket_view(storage: Storage, session_id: str, bucket_now: float | None, fresh_s: float) -> BucketView:
    """What ``sessions/<id>/status.json`` says (blocking), judged on the bucket's clock as
    :func:`bucket_view` is. ``status`` is the session's status."""
    from ...training.inference import read_session_status, status_key

    return _view(storage, lambda: read_session_status(storage, session_id), status_key(session_id), bucket_now,
                 fresh_s)


def decide_session(session_id: str | None, local: LocalSession, bucket: BucketView | None) -> Decision:
    """The verdict for one instance labelled with ``session_id``: the rules of :func:`decide`."""
    if session_id is None or not is_run_id(session_id):
        return Decision(Verdict.UNOWNED, "its label names no session this pack could have made")
    return _decide("session", session_id, local.session, local.corrupt, local.damaged, bucket, "its ComfyUI")
