"""What a guard pass could not do, one record at a time.

A record that cannot be read (a ``status.json`` that is not a status, a state-store row with an
unknown state, a ``/charges/`` row with a garbage amount) or an action that failed (a destroy,
a listing) becomes one :class:`Problem`; the pass goes on with the other records. The pass
returns them (``problems`` in its result), logs each, and the guard tells the sidebar.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Iterator

log = logging.getLogger(__name__)

# kind: what went wrong                       subject
LISTING = "listing"  # instances could not be listed      the provider
STATE_STORE = "state_store"  # state.db is damaged         the store's path
CORRUPT_RUN = "corrupt_run"  # a run row cannot be read     run id
CORRUPT_SESSION = "corrupt_session"  # a session row cannot be read     session id
CORRUPT_ROW = "corrupt_row"  # an instance / ledger / kv row    row
CORRUPT_STATUS = "corrupt_status"  # runs/<id>/status.json is not a status   run id
BUCKET = "bucket"  # the bucket could not be read or written  run id
CHARGES = "charges"  # /charges/ rows refused, paging cut, a suspect row   "/charges/", "/charges/instance-<id>"
DESTROY = "destroy"  # a destroy failed                       instance id
BUDGET = "budget"  # a budget could not be checked            run id or "month"
RECOVERY = "recovery"  # a preempted run could not be moved yet (no offer, launch failed)   run id
SETTINGS = "settings"  # a settings file cannot be read: the last good ones hold   "settings"
FOREIGN = "foreign_bucket"  # an instance of another bucket's run or session: kept   instance id
UNATTRIBUTED = "unattributed"  # an instance whose bucket cannot be told: kept        instance id
RUN_LIMITS = "run_limits"  # another home's run held to its own limits, not this home's (or to the hard maxima)   run id
CLOCK = "clock"  # this machine's clock is off the bucket's, or the bucket's cannot be read   "clock"
UNEXPECTED = "unexpected"  # a bug: one record or phase failed     what


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class Problems:
    """The problems of one pass, each (kind, subject) once, in the order they were met."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Problem] = {}

    def add(self, kind: str, subject: Any, message: str) -> None:
        key = (kind, str(subject))
        if key not in self._items:
            log.warning("guard: %s", message)
            self._items[key] = Problem(kind, str(subject), message)

    def add_corrupt(self, exc: Any, store: Any) -> None:
        """A :class:`CorruptRecord` from the state store: one run's row (``details["run_id"]``),
        one session's (``details["session_id"]``) or the store itself."""
        run_id = exc.details.get("run_id")
        session_id = exc.details.get("session_id")
        if run_id is not None:
            self.add(CORRUPT_RUN, run_id, exc.message)
        elif session_id is not None:
            self.add(CORRUPT_SESSION, session_id, exc.message)
        else:
            self.add(STATE_STORE, store, exc.message)

    def kinds(self) -> set[str]:
        return {p.kind for p in self._items.values()}

    def __iter__(self) -> Iterator[Problem]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def to_list(self) -> list[dict[str, str]]:
        return [p.to_dict() for p in self]
