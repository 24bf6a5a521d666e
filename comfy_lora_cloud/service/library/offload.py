"""Where heavy work runs: in a worker process when the app was built by ComfyUI, so the
server's event loop never waits for it. :class:`Offload` is that decision, one object per app.

ComfyUI runs the pack's routes on its server loop and the nodes on a thread of the same
process: a 1,000-file sync or a dataset preparation there holds the GIL for its Python work
(the google client's per-request code, hashing small files, the pipeline's bookkeeping) and a
cheap route answered in up to 80 ms instead of 5. Here the same functions run in a child
process (``python -m comfy_lora_cloud.service.library.offload``) and their progress events come back
over a pipe, to the same callbacks as before, so the sidebar's and the node's progress bars
move as they did.

* ComfyUI's wiring gives its app :meth:`Offload.in_workers`; the CLI and tests get
  :meth:`Offload.here` (a command has no server to stall, and a process of its own already).
  The app hands its offload to the library and the mirror, which pass it on to the dataset
  transfers (:mod:`.datasets` takes it as a :class:`~.transfers.Transfers`).
* Small jobs stay in this process (below :data:`MIN_FILES` files and :data:`MIN_BYTES`
  bytes): a worker costs a Python start-up, more than they take.
* What can run elsewhere: a storage the child can open again from its URL (the local store,
  GCS); any other (a test double) runs here.
* Workers run at a lower CPU priority (``nice`` :data:`NICENESS`): on a busy machine the server
  is scheduled first, whatever the worker is doing.
* Workers are kept (at most :data:`MAX_IDLE` idle ones per offload) and serve job after job, so
  a Python start-up is paid once. A worker sends pickles over its stdout (length-prefixed
  frames): progress events, then the result or the error. Our errors come back as themselves
  (class and message); anything else as a :class:`~comfy_lora_cloud.errors.StorageError` that
  names it. Nothing secret travels: the child reads the settings (and credentials) from the
  same home folder.

Wrapped: planning and applying a sync (:meth:`Offload.plan_push`, :meth:`Offload.plan_pull`,
:meth:`Offload.apply`; every dataset upload and download and ``sync`` go through them) and
preparing a dataset (:meth:`Offload.prepare`). The worker runs the very functions this process
would; :mod:`.prepare`, the one of them that uploads a dataset, runs its transfers where it is
(:data:`.transfers.IN_PROCESS`) and never imports this module back.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ...errors import LoraCloudError, StorageError
from ...storage import Storage, sync

log = logging.getLogger(__name__)

MIN_FILES = 64
MIN_BYTES = 64 * 1024 * 1024
#: how much lower the workers' CPU priority is than the server's (POSIX ``nice``)
NICENESS = 10
#: idle workers an offload keeps for the next job: a Python start-up (and the GCS client's
#: imports) is paid once, not per job
MAX_IDLE = 2
# the folder that holds comfy_lora_cloud/ (this file is comfy_lora_cloud/service/library/offload.py),
# so the child finds the pack where ComfyUI loaded it, installed or not
_PACK_ROOT = str(Path(__file__).resolve().parents[3])


class Offload:
    """Where this app's sync planning, transfers and preparations run: in this process
    (:meth:`here`), or, when they are heavy, in worker processes (:meth:`in_workers`) that read
    the settings of ``home``. Same signatures as the sync engine's functions."""

    def __init__(self, *, workers: bool = False, home: str | os.PathLike[str] | None = None):
        self.workers = workers
        # the settings folder the workers read (None: LORA_CLOUD_HOME or the per-user folder)
        self.home = str(home) if home else None
        self._idle: list[_Worker] = []
        self._idle_lock = threading.Lock()

    @classmethod
    def here(cls) -> Offload:
        """Everything in this process (the CLI, tests)."""
        return cls()

    @classmethod
    def in_workers(cls, home: str | os.PathLike[str] | None = None) -> Offload:
        """Heavy work in worker processes (ComfyUI), one of them started now, in the
        background, so the first heavy job does not wait for it."""
        offload = cls(workers=True, home=home)
        offload.prewarm()
        return offload

    # ---- the wrappers (same signatures as the sync engine's) -----------------------------------
    def plan_push(self, storage: Storage, local_dir: str | os.PathLike[str], prefix: str, *, delete: bool = False,
                  cache: sync.HashCache | None = None) -> sync.SyncPlan:
        """:func:`sync.plan_push`, in a worker for a folder of many files (planning may hash them)."""
        if Path(local_dir).is_dir() and self._worth_it(storage, _count_files(local_dir)):
            return self._run("plan_push", storage, dict(local_dir=str(local_dir), prefix=prefix, delete=delete),
                             cache=cache)
        return sync.plan_push(storage, local_dir, prefix, delete=delete, cache=cache)

    def plan_pull(self, storage: Storage, prefix: str, local_dir: str | os.PathLike[str], *, delete: bool = False,
                  cache: sync.HashCache | None = None) -> sync.SyncPlan:
        """:func:`sync.plan_pull`, in a worker whenever there are workers: its listing may be a
        thousand objects to parse, and the folder may hold as many files to hash."""
        if self._worth_it(storage, MIN_FILES):
            return self._run("plan_pull", storage, dict(prefix=prefix, local_dir=str(local_dir), delete=delete),
                             cache=cache)
        return sync.plan_pull(storage, prefix, local_dir, delete=delete, cache=cache)

    def apply(self, plan: sync.SyncPlan, storage: Storage, *, workers: int = 8,
              progress: sync.ProgressFn | None = None, cache: sync.HashCache | None = None) -> sync.SyncResult:
        """:func:`sync.apply`, in a worker for many files or many bytes; progress comes back."""
        if self._worth_it(storage, len(plan.transfers) + len(plan.deletes), plan.bytes):
            return self._run("apply", storage, dict(plan=plan, workers=workers), progress=progress, cache=cache)
        return sync.apply(plan, storage, workers=workers, progress=progress, cache=cache)

    def prepare(self, storage: Storage, source: str, name: str, options: Any, *, replace_existing: bool = False,
                force: bool = False, progress: Callable[[str, int, int], None] | None = None) -> Any:
        """:func:`.prepare.prepare_to_storage`, in a worker whenever there are workers (it is
        always heavy)."""
        from .prepare import prepare_to_storage  # the pipeline's imports, only for a preparation

        if self.workers and _portable(storage):
            return self._run("prepare", storage, dict(source=source, name=name, options=options,
                                                      replace_existing=replace_existing, force=force),
                             progress=progress, stage=True)
        return prepare_to_storage(storage, source, name, options, replace_existing=replace_existing, force=force,
                                  progress=progress)

    def _worth_it(self, storage: Storage, files: int, size: int = 0) -> bool:
        return self.workers and _portable(storage) and (files >= MIN_FILES or size >= MIN_BYTES)

    # ---- the workers -------------------------------------------------------------------------
    def prewarm(self) -> None:
        """Start a worker now, in the background, so the first heavy job does not wait for it."""
        threading.Thread(target=lambda: self._release(_Worker()), name="lora-cloud-prewarm", daemon=True).start()

    def close(self) -> None:
        """End the idle workers (a busy one ends when its job does and it finds no place here)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.close()

    def _acquire(self) -> _Worker:
        with self._idle_lock:
            while self._idle:
                w = self._idle.pop()
                if w.alive():
                    return w
                w.close()
        return _Worker()

    def _release(self, w: _Worker) -> None:
        with self._idle_lock:
            if w.alive() and len(self._idle) < MAX_IDLE:
                self._idle.append(w)
                return
        w.close()

    def _run(self, kind: str, storage: Storage, args: dict[str, Any], *, progress: Callable[..., None] | None = None,
             cache: sync.HashCache | None = None, stage: bool = False) -> Any:
        job = {"kind": kind, "storage": storage.url, "home": self.home, "args": args,
               "cache": str(cache.path) if cache is not None and cache.path else None}
        if cache is not None:
            cache.save()  # what this process learnt, for the worker to use
        outcome: Any = None
        w = self._acquire()
        try:
            assert w.proc.stdin is not None and w.proc.stdout is not None
            try:
                _write_frame(w.proc.stdin, job)
            except (BrokenPipeError, OSError):  # an idle worker that died: one fresh try
                w.close()
                w = _Worker()
                assert w.proc.stdin is not None and w.proc.stdout is not None
                _write_frame(w.proc.stdin, job)
            while outcome is None:
                try:
                    kind_, value = _read_frame(w.proc.stdout)
                except EOFError:
                    break
                if kind_ == "progress" and progress is not None:
                    progress(*value) if stage else progress(value)
                elif kind_ in ("result", "error"):
                    outcome = (kind_, value)
        finally:
            if outcome is None:  # it died, or we stopped listening (an error here): it goes
                w.close()
            else:
                self._release(w)
            if cache is not None:
                cache.reload()
        if outcome is None:
            raise StorageError(f"the worker process for {kind} ended without an answer (exit code {w.proc.returncode})")
        if outcome[0] == "error":
            raise _rebuild(outcome[1])
        return outcome[1]


def _portable(storage: Storage) -> bool:
    """A storage a worker can open again from its URL."""
    from ...storage.local import LocalStorage

    gcs = sys.modules.get("comfy_lora_cloud.storage.gcs")
    return type(storage) is LocalStorage or (gcs is not None and type(storage) is gcs.GcsStorage)


def _count_files(folder: str | os.PathLike[str], stop: int = MIN_FILES) -> int:
    n = 0
    for _ in sync.scan_local(Path(folder)):
        n += 1
        if n >= stop:
            break
    return n


# ---- the parent's side ---------------------------------------------------------------------------
def _write_frame(f: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack(">Q", len(data)) + data)
    f.flush()


def _read_frame(f: BinaryIO) -> Any:
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack(">Q", head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)  # our own child's output, never the bucket's


class _Worker:
    """One worker process: it serves jobs one after the other until its stdin closes (when
    this process exits, so does it)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACK_ROOT, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "comfy_lora_cloud.service.library.offload"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def _rebuild(err: dict[str, Any]) -> Exception:
    from ... import errors

    cls = getattr(errors, err["type"], None)
    if isinstance(cls, type) and issubclass(cls, LoraCloudError):
        exc = cls(err["message"])
        for k, v in err.get("attrs", {}).items():
            setattr(exc, k, v)
        return exc
    return StorageError(f"the worker process failed: {err['type']}: {err['message']}")


# ---- the worker's side ---------------------------------------------------------------------------
def _serve(job: dict[str, Any], out: BinaryIO) -> None:
    from ...storage import open_storage
    from ..home import load_settings

    lock = threading.Lock()

    def emit(kind: str, value: Any) -> None:
        with lock:
            _write_frame(out, (kind, value))

    try:
        # the settings in force in the app that sent the job, a damaged file's last good copy included
        settings = load_settings(job["home"] or None).settings
        storage = open_storage(job["storage"], settings=settings)
        cache = sync.HashCache(job["cache"]) if job["cache"] else None
        a = job["args"]
        kind = job["kind"]
        if kind == "plan_push":
            result: Any = sync.plan_push(storage, a["local_dir"], a["prefix"], delete=a["delete"], cache=cache)
        elif kind == "plan_pull":
            result = sync.plan_pull(storage, a["prefix"], a["local_dir"], delete=a["delete"], cache=cache)
        elif kind == "apply":
            result = sync.apply(a["plan"], storage, workers=a["workers"], cache=cache,
                                progress=lambda e: emit("progress", e))
        elif kind == "prepare":
            from .prepare import prepare_to_storage

            result = prepare_to_storage(storage, a["source"], a["name"], a["options"],
                                        replace_existing=a["replace_existing"], force=a.get("force", False),
                                        progress=lambda *e: emit("progress", e))
        else:
            raise StorageError(f"unknown job {kind!r}")
        if cache is not None:
            cache.save()
        emit("result", result)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        attrs = {k: v for k, v in vars(exc).items() if isinstance(v, (str, int, float, bool, dict, list, type(None)))}
        message = exc.message if isinstance(exc, LoraCloudError) else str(exc)[:500]
        emit("error", {"type": type(exc).__name__, "message": message, "attrs": attrs})


def main() -> None:
    """Serve jobs from stdin until it closes."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the frames
    logging.basicConfig(level=logging.WARNING, format="lora-cloud worker %(levelname)s %(name)s: %(message)s")
    if hasattr(os, "nice"):  # background work: when the CPUs are busy, the server goes first
        try:
            os.nice(NICENESS)
        except OSError:
            pass
    try:  # imported once, before the first job waits for them
        from ...storage import gcs  # noqa: F401
        import google.cloud.storage  # noqa: F401
    except ImportError:
        pass

    while True:
        try:
            job = _read_frame(sys.stdin.buffer)
        except EOFError:
            break
        _serve(job, out)
    out.close()


if __name__ == "__main__":
    main()
