"""A lease on one storage object: one writer at a time, and a dead writer's lease taken over.

A bucket has no locks, but it has preconditions: "write only if the object does not exist"
(``if_generation_match=0``) and "only if it is still the version I read". That is enough:

    with acquire(storage, layout.dataset_lock_key("cat"), purpose="upload of ~/photos") as lease:
        ...                # a thread renews the lease while the work runs
        lease.confirm()    # right before a step that must not happen twice: still ours?

* The lease object says who holds it (user, host, pid), what for, since when, and when it was
  last renewed. A second writer reads that and fails with :class:`LockHeld`, naming the first.
* It is stale, and the next writer takes it over, when its holder stopped renewing it for
  ``stale_s`` (a killed upload, a laptop closed mid-way), or at once when its holder ran on
  this machine and that process is gone. The takeover is itself a precondition write, so of two
  writers racing for one stale lease, one wins. The taken-over holder is kept in
  :attr:`Lease.previous` (a resumed upload uses it).
* A holder whose lease was taken over finds out at its next renewal or :meth:`Lease.confirm`
  and stops (:class:`LockHeld`); it never deletes the new holder's lease on the way out.
* A holder whose work failed midway abandons it (:meth:`Lease.abandon`): the lease stays, stale
  at once, so the next writer knows what was left half done. A writer that took such a lease
  over and then did nothing puts the record back the same way.

Blocking, like every storage call; the renewal runs in a daemon thread.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..errors import LockHeld, ObjectNotFound, PreconditionFailed, StorageError
from .base import Storage, pid_alive

log = logging.getLogger(__name__)

#: a lease not renewed for this long belongs to a writer that is gone
STALE_S = 10 * 60


@dataclass(frozen=True)
class LockInfo:
    """What a lease object holds."""

    host: str
    pid: int
    user: str
    purpose: str
    started: float
    heartbeat: float
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def mine(cls, purpose: str, data: dict[str, Any] | None, now: float) -> "LockInfo":
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name (containers): not worth failing for
            user = "?"
        return cls(socket.gethostname(), os.getpid(), user, purpose, now, now, dict(data or {}))

    @classmethod
    def parse(cls, raw: bytes, fallback_time: float) -> "LockInfo":
        """A lease object as written by :meth:`to_bytes`; anything else reads as an unknown holder
        last seen at ``fallback_time`` (the object's own time), so it goes stale like any other."""
        try:
            d = json.loads(raw)
            return cls(str(d["host"]), int(d["pid"]), str(d.get("user", "?")), str(d.get("purpose", "")),
                       float(d["started"]), float(d["heartbeat"]), dict(d.get("data") or {}))
        except (ValueError, KeyError, TypeError):
            return cls("?", 0, "?", "unreadable lock", fallback_time, fallback_time)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    def stale(self, now: float, stale_s: float) -> bool:
        if now - self.heartbeat > stale_s:
            return True
        return self.host == socket.gethostname() and self.pid > 0 and not pid_alive(self.pid)

    def describe(self, now: float) -> str:
        return (f"{self.user}@{self.host} (pid {self.pid}), {self.purpose or 'no purpose given'}, "
                f"started {_ago(now - self.started)} ago, last renewed {_ago(now - self.heartbeat)} ago")


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def read_lock(storage: Storage, key: str) -> tuple[LockInfo, int] | None:
    """The lease at ``key`` and its generation, or None when nobody holds it."""
    try:
        info = storage.stat(key)
        raw = storage.read_bytes(key)
    except ObjectNotFound:
        return None
    return LockInfo.parse(raw, info.updated or 0.0), int(info.generation or 0)


class Lease:
    """A held lease: renewed every ``renew_s`` in a thread until :meth:`release`."""

    def __init__(self, storage: Storage, key: str, info: LockInfo, generation: int, *, stale_s: float,
                 clock: Callable[[], float], renew_s: float | None = None, previous: LockInfo | None = None):
        self.storage = storage
        self.key = key
        self.info = info
        self.generation = generation
        self.previous = previous
        self.stale_s = stale_s
        self.clock = clock
        self._lost: str | None = None
        self._mu = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, args=(renew_s or max(0.05, stale_s / 4),),
                                        name=f"lora-cloud-lease {key}", daemon=True)
        self._thread.start()

    def _renew_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.renew()
            except LockHeld:
                return
            except StorageError as exc:  # a network blip: try again next round, the lease has slack
                log.warning("could not renew the lease %s: %s", self.key, exc)

    def renew(self) -> None:
        """Write a new heartbeat, only over our own last write; :class:`LockHeld` if it is gone."""
        with self._mu:
            if self._lost:
                raise LockHeld(self._lost)
            info = LockInfo(**{**asdict(self.info), "heartbeat": self.clock()})
            try:
                written = self.storage.write_bytes(self.key, info.to_bytes(), if_generation_match=self.generation,
                                                   content_type="application/json")
            except (PreconditionFailed, ObjectNotFound):
                self._lost = self._lost_message()
                raise LockHeld(self._lost) from None
            self.info, self.generation = info, int(written.generation or 0)

    def _lost_message(self) -> str:
        now = self.clock()
        current = read_lock(self.storage, self.key)
        who = current[0].describe(now) if current else "nobody (the lock was deleted)"
        return f"lost the lock {self.key} while working: it is now held by {who}; stopped"

    def confirm(self) -> None:
        """Prove the lease is still ours right now (one precondition write); call it before a
        step that must not happen once another writer took over."""
        self.renew()

    def abandon(self, leave: LockInfo | None = None) -> None:
        """Stop holding the lease but leave it behind, already stale: the work failed midway, the
        next writer takes it over at once and finds in :attr:`Lease.previous` what was being
        done (a dataset upload uses that to finish itself). ``leave``: the record to leave
        instead of ours (the one we took over, when we changed nothing)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._mu:
            if self._lost:
                return
            self._lost = "abandoned"
            dead = LockInfo(**{**asdict(leave or self.info), "heartbeat": 0.0})
            with contextlib.suppress(StorageError):
                self.storage.write_bytes(self.key, dead.to_bytes(), if_generation_match=self.generation,
                                         content_type="application/json")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._mu:
            if self._lost:
                return
            self._lost = "released"
            with contextlib.suppress(ObjectNotFound, PreconditionFailed):
                self.storage.delete(self.key, if_generation_match=self.generation)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(storage: Storage, key: str, *, purpose: str, data: dict[str, Any] | None = None,
            stale_s: float = STALE_S, clock: Callable[[], float] = time.time,
            renew_s: float | None = None) -> Lease:
    """Take the lease at ``key``: create it, or take over a stale one. :class:`LockHeld` names
    the holder when it is live."""
    for _ in range(5):  # each turn loses only to another writer's successful write
        now = clock()
        mine = LockInfo.mine(purpose, data, now)
        current = read_lock(storage, key)
        try:
            if current is None:
                written = storage.write_bytes(key, mine.to_bytes(), if_generation_match=0,
                                              content_type="application/json")
                return Lease(storage, key, mine, int(written.generation or 0), stale_s=stale_s, clock=clock,
                             renew_s=renew_s)
            holder, generation = current
            if not holder.stale(now, stale_s):
                raise LockHeld(
                    f"{key} is locked by another writer: {holder.describe(now)}. Wait for it to finish; a "
                    f"writer that was killed is taken over once its lock is {stale_s / 60:g} min old (at once "
                    "on the machine it ran on)", holder=asdict(holder))
            log.warning("taking over the stale lock %s from %s", key, holder.describe(now))
            written = storage.write_bytes(key, mine.to_bytes(), if_generation_match=generation,
                                          content_type="application/json")
            return Lease(storage, key, mine, int(written.generation or 0), stale_s=stale_s, clock=clock,
                         renew_s=renew_s, previous=holder)
        except (PreconditionFailed, ObjectNotFound) as exc:
            if isinstance(exc, LockHeld):
                raise
            continue  # someone wrote or removed it between our read and our write: look again
    raise LockHeld(f"{key} keeps changing under us: another writer is taking it; try again")
