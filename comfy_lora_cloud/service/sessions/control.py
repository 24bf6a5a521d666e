"""Remote ComfyUI sessions: a rented GPU running the inference image, reached over SSH.

The one home of: starting a session (the cheapest offer that fits inference, labelled
``lora-cloud:session:<id>`` so the guard knows it), waiting until its ComfyUI answers, its
tunnel (a local port forward with keepalive and reconnect), generating through it, stopping it,
its live cost, its outputs in the bucket, and the guard's session rules (:class:`SessionGuard`).
The CLI (``lora-cloud comfy ...``), the Remote Generate node and the sidebar's Generate section
all come here.

Money rules, as for runs (``service/runs/launch.py``): the intent is recorded before the create call
(one live session per controller, claimed in one transaction, so two clicks rent one machine),
the instance id right after; a failed launch destroys what its label finds. The guard
(:class:`SessionGuard`, run inside every guard pass) adopts an instance whose record was lost to
a crash, destroys a labelled instance no live session owns, ends a session whose instance
vanished, and enforces idle minutes and max hours from this controller's side (the image
enforces both itself too). The budgets (max $/hr, month) apply as to any instance.

Tunnels are bound to an event loop, and one App serves several (ComfyUI's server loop, each
prompt's loop); so every tunnel of the process lives on one private loop thread
(:class:`TunnelLoop`) and any loop may ask for one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine

from ... import jsonsafe
from ...errors import (
    BudgetExceeded, ComfyUIError, ConfigError, CorruptRecord, LoraCloudError, ObjectNotFound, ProviderError,
    StorageError, TunnelError,
)
from ...models import (Instance, InstanceState, Listed, Problem, Session, SessionState, check_number, is_number,
                      shown, validate_name)
from ...providers.base import LaunchSpec, OfferRequest, Provider, session_label, with_bucket_tag
from ...settings import MAX_SESSION_HOURS
from ...storage import layout
from ...training import inference
from ...training.launch import hub_token_env
from ..money import problems as kinds
from ..money.budgets import Budgets, check_launch
from ..money.costs import CostLedger
from ..money.destroy import destroy_instance
from ..money.grace import UnownedGrace
from ..events import SESSION_EVENT
from ..money.ownership import (Attributed, Attribution, Bucket, BucketFacts, Decision, LocalSession, Verdict,
                        attribute_all, decide_session, launch_bucket_id, learn_bucket, report_attribution,
                        report_facts, session_bucket_view, written_at)
from ..money.problems import Problems

if TYPE_CHECKING:
    from ..core import Core
    from ..money.instances import Instances
    from ..templates.workflow_api import Workflow

log = logging.getLogger(__name__)

DEFAULT_IDLE_MINUTES = 20.0
DEFAULT_VRAM_GB = 24.0
DISK_GB = 80.0  # the image (~20 GB), fp8 weights (~17 GB; fp16 ~34 GB), LoRAs and outputs
START_SCRIPT = 'bash "${LORA_CLOUD_START_SCRIPT:-/opt/lora-cloud/start.sh}"'
_KEY = "session:"
_UNOWNED = "sessions:unowned_since:"
_KEEPER = "sessions:keeper:"
GUARD_SLACK_S = 60.0  # the image stops itself first; the guard acts this much later
BOOT_GRACE_S = 1800.0  # how long an instance may boot before a session without any report is given up


# what a session request's numbers may be: (low, high), low exclusive (a session's hours may be
# seconds: the image and the guard end it at once, nothing bills on)
_REQUEST_RANGES = {"vram_gb": (0.0, 1024.0), "idle_minutes": (0.0, MAX_SESSION_HOURS * 60),
                   "max_hours": (0.0, MAX_SESSION_HOURS)}


@dataclass
class SessionRequest:
    """What a user asks for; the offer, the port and the environment are derived."""

    gpu: str | None = None  # a GPU model (4090, a100...); None: the cheapest that fits
    vram_gb: float = DEFAULT_VRAM_GB
    idle_minutes: float = DEFAULT_IDLE_MINUTES
    max_hours: float | None = None  # None: the session_max_hours setting (the runs' max_run_hours never applies)
    precision: str = "fp8"

    @classmethod
    def from_body(cls, body: Any) -> "SessionRequest":
        """A request from a JSON body (the sidebar), checked strictly."""
        if not isinstance(body, dict):
            raise ConfigError("the request body must be a JSON object")
        allowed = {"gpu", "vram_gb", "idle_minutes", "max_hours", "precision"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(allowed))}")
        out: dict[str, Any] = {}
        for key in ("gpu", "precision"):
            value = body.get(key)
            if value in (None, "", "auto"):
                continue
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a string")
            out[key] = value
        for key in ("vram_gb", "idle_minutes", "max_hours"):
            value = body.get(key)
            if value is None:
                continue
            out[key] = float(check_number(key, value, *_REQUEST_RANGES[key], above=True))
        return cls(**out).checked()

    def checked(self, default_max_hours: float | None = None) -> "SessionRequest":
        """Checked, with ``max_hours`` filled from ``default_max_hours`` (the settings') when unset."""
        if self.max_hours is None and default_max_hours is not None:
            self.max_hours = float(default_max_hours)
        if is_number(self.max_hours) and self.max_hours > MAX_SESSION_HOURS:
            raise ConfigError(f"max_hours is at most {MAX_SESSION_HOURS:g}: a session is for generating, not for "
                              "keeping")
        for name, (low, high) in _REQUEST_RANGES.items():
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


# ---- the records ------------------------------------------------------------------------------
# A record is checked field by field as a run's row is (``Session.from_record``): one that is not
# what it should be (``max_hours`` as text, ``created_at`` null, a 401-digit port) is a
# CorruptRecord, reported, never a TypeError in the middle of the guard or a view. Its instance
# still has hours: the guard holds it to the record's own max_hours when that can be read, else
# the most any session may have (MAX_SESSION_HOURS), counted from the earlier of its recorded
# start (when readable) and its instance's first sighting here, so it cannot bill forever
# (:meth:`SessionGuard._damaged_hours`); the views list it as damaged (:func:`salvage`).
_FIELDS = tuple(f.name for f in dataclasses.fields(Session))


def _record_data(key: str, raw: str | None) -> tuple[Any, str]:
    """The record's JSON (within jsonsafe's bounds), or None and why not."""
    try:
        return jsonsafe.loads(raw or ""), ""
    except ValueError as exc:
        return None, str(exc)


def _decode(key: str, raw: str) -> Session:
    sid = key[len(_KEY):]
    data, why = _record_data(key, raw)
    wrong = [why] if why else Session.from_record(data, max_hours=MAX_SESSION_HOURS)[1]
    if not wrong and data.get("id") != sid:
        wrong = [f"it names session {shown(data.get('id'))}"]
    if wrong:
        raise CorruptRecord(f"the record of session {sid[:100]} in the state store cannot be read "
                            f"({'; '.join(wrong)[:400]})", session_id=sid)
    return Session.from_record(data, max_hours=MAX_SESSION_HOURS)[0]


def salvage(key: str, raw: str | None, *, born: float) -> tuple[Session, list[str]]:
    """A damaged record as far as it can be read: ``(session, wrong)``. Fields that can be read
    are kept; max_hours falls back to the most a session may have, the times to ``born`` (its
    instance's first sighting here), an unreadable state to starting (it may still bill)."""
    sid = key[len(_KEY):]
    data, why = _record_data(key, raw)
    fallback = {"id": sid, "max_hours": MAX_SESSION_HOURS, "created_at": born, "updated_at": born,
                "state": SessionState.STARTING}
    session, wrong = Session.from_record(data, max_hours=MAX_SESSION_HOURS, fallback=fallback)
    session.id = sid
    return session, [why] if why else wrong


def first_seen(state: Any, provider: str, instance_id: str | None) -> float | None:
    """When this controller first saw the instance (the state store's ``created_at``, our clock)."""
    if not instance_id:
        return None
    for row in state.list_instances(include_destroyed=True, on_corrupt=lambda exc: None):
        if row["id"] == instance_id and row["provider"] == provider:
            return row["created_at"]
    return None


def _is_live(raw: str) -> bool:
    data, why = _record_data(_KEY, raw)
    if why:
        return False
    session, wrong = Session.from_record(data, max_hours=MAX_SESSION_HOURS)
    return not wrong and not session.state.is_terminal


class TunnelLoop:
    """A daemon thread running the loop every tunnel of this process lives on."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=main, name="lora-cloud-tunnels", daemon=True).start()
                ready.wait()
                self._loop = loop
            return self._loop

    async def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await ``coro`` on the tunnel loop from any loop (or on it, directly)."""
        loop = self._start()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def run_blocking(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        fut: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._start())
        return fut.result(timeout)


class Sessions:
    def __init__(self, core: Core, instances: Instances):
        self.core = core
        self.instances = instances
        self._tunnel_loop = TunnelLoop()
        self._tunnels: dict[str, Any] = {}  # session id -> remote.tunnel.Tunnel (on the tunnel loop)

    # ---- records -----------------------------------------------------------------------------
    def _get(self, session_id: str) -> Session | None:
        raw = self.core.state.get_kv(_KEY + session_id)
        return _decode(_KEY + session_id, raw) if raw else None

    def _put(self, session: Session) -> Session:
        session.updated_at = self.core.clock()
        self.core.state.set_kv(_KEY + session.id, json.dumps(session.to_dict(), sort_keys=True))
        return session

    def _update(self, session_id: str, **fields: Any) -> Session:
        session = self._get(session_id)
        if session is None:
            raise ObjectNotFound(f"no session {session_id!r}")
        for k, v in fields.items():
            setattr(session, k, v)
        session.__post_init__()
        return self._put(session)

    def records(self, *, on_corrupt: Callable[[CorruptRecord], None] | None = None) -> list[Session]:
        """Every session this controller recorded, newest first (unreadable ones skipped)."""
        out = []
        for key, raw in self.core.state.kv_items(_KEY):
            try:
                out.append(_decode(key, raw))
            except CorruptRecord as exc:
                if on_corrupt is None:
                    log.warning("%s", exc.message)
                else:
                    on_corrupt(exc)
        return sorted(out, key=lambda s: s.created_at, reverse=True)

    def _live_record(self) -> Session | None:
        return next((s for s in self.records() if not s.state.is_terminal), None)

    async def _resolve(self, session_id: str | None) -> Session:
        if session_id:
            validate_name(session_id, "session id")
            session = await asyncio.to_thread(self._get, session_id)
            if session is None:
                raise ObjectNotFound(f"no session {session_id!r} was started from here")
            return session
        session = await asyncio.to_thread(self._live_record)
        if session is None:
            raise ObjectNotFound("no session is running: start one with `lora-cloud comfy start` (or the sidebar)")
        return session

    # ---- views -------------------------------------------------------------------------------
    async def list(self, limit: int = 20) -> list[dict[str, Any]]:
        """The views of the newest ``limit`` sessions recorded here. A record that cannot be read
        is listed too, as damaged (``damaged``: why; what can be read of it), never left out
        silently nor a failed listing."""
        return await asyncio.to_thread(self._list, limit)

    def _list(self, limit: int) -> list[dict[str, Any]]:
        found: list[tuple[Session, str, bool]] = []  # (session, why it is damaged, its state unreadable)
        for key, raw in self.core.state.kv_items(_KEY):
            try:
                found.append((_decode(key, raw), "", False))
            except CorruptRecord as exc:
                log.warning("%s", exc.message)
                session, wrong = salvage(key, raw, born=self.core.clock())
                fields = {w.split(" ", 1)[0] for w in wrong}
                if "created_at" in fields:
                    session.created_at = first_seen(self.core.state, session.provider, session.instance_id) \
                        or session.created_at
                unreadable = bool(wrong) and not fields & set(_FIELDS)  # not JSON, or not an object
                found.append((session, exc.message, "state" in fields or unreadable))
        found.sort(key=lambda f: f[0].created_at, reverse=True)
        views = []
        for session, damaged, unknown_state in found[:limit]:
            view = self._view(session)
            if damaged:
                view.update(damaged=damaged, error=damaged)
                if unknown_state:
                    view["state"] = "damaged"
            views.append(view)
        return views

    async def get(self, session_id: str | None = None) -> dict[str, Any]:
        """One session's view (default: the live one)."""
        session = await self._resolve(session_id)
        return await asyncio.to_thread(self._view, session)

    async def current(self) -> dict[str, Any] | None:
        """The live session's view, or None."""
        session = await asyncio.to_thread(self._live_record)
        return await asyncio.to_thread(self._view, session) if session else None

    def _view(self, session: Session) -> dict[str, Any]:
        now = self.core.clock()
        view = {k: v for k, v in session.to_dict().items()}
        view["live"] = not session.state.is_terminal
        view["deadline"] = session.created_at + session.max_hours * 3600
        view["cost_usd"], view["uptime_seconds"] = self._cost(session, now)
        status = None
        if view["live"]:  # an ended session's last report is in its record already
            try:
                status = inference.read_session_status(self.core.storage, session.id)
            except (StorageError, LoraCloudError):
                status = None
        view["remote"] = status.to_dict() if status else None
        tunnel = self._tunnels.get(session.id)
        alive = tunnel is not None and tunnel.alive and view["live"]
        view["url"] = tunnel.url if alive else None
        view["tunnel"] = tunnel.state if tunnel is not None and view["live"] else None
        return view

    def _cost(self, session: Session, now: float) -> tuple[float, float]:
        """Spent so far (the ledger's figure, as for every instance) and seconds up."""
        if not session.instance_id:
            return 0.0, 0.0
        rows = [r for r in self.core.state.list_instances(include_destroyed=True)
                if r["id"] == session.instance_id and r["provider"] == session.provider]
        if not rows:
            return 0.0, 0.0
        row = rows[0]
        end = row.get("destroyed_at") or now
        if row["state"] == "destroyed":
            spent = CostLedger(self.core.state, self.core.clock).instance_usd(row["id"])
        else:
            spent = CostLedger(self.core.state, self.core.clock).live_usd(
                row["id"], row["state"], row["dph_total"], row["storage_dph"], row["created_at"], now)
        return round(spent, 4), max(0.0, end - row["created_at"])

    def _emit(self, view: dict[str, Any]) -> None:
        self.core.emit(SESSION_EVENT, session_event(view))

    # ---- the SSH key ---------------------------------------------------------------------------
    def ssh_key(self) -> Any:
        """The pack's key pair (``ssh_key_path`` if set, else ``<home>/ssh/id_ed25519``, made once)."""
        from ...remote.keys import ensure_keypair

        configured = self.core.settings.ssh_key_path
        if configured:
            path = Path(configured).expanduser()
            return ensure_keypair(path.parent, path.name)
        return ensure_keypair(self.core.settings.home / "ssh")

    def host_keys(self) -> Any:
        from ...remote.hostkeys import FILE_NAME, HostKeyStore

        return HostKeyStore(self.core.settings.home / "ssh" / FILE_NAME)

    # ---- starting ----------------------------------------------------------------------------
    def _instance_env(self, session: Session, storage: Any) -> dict[str, str]:
        """What the image needs, nothing more: the bucket (with a bucket-scoped service account),
        the session's limits, and an HF token only while the bucket lacks the weights."""
        settings = self.core.settings
        url = settings.storage_url
        if not url.startswith("gs://"):
            raise ConfigError("a rented GPU cannot reach a local folder: set storage to a gs:// bucket "
                              "(lora-cloud config set storage gs://my-bucket)")
        sa = settings.secret("gcs_service_account_json")
        if not sa:
            raise ConfigError("the instance needs a service account for the bucket: see docs/credentials.md, then "
                              "lora-cloud config set gcs_service_account_json - < key.json")
        env = {inference.ENV_STORAGE: url, inference.ENV_SESSION: session.id,
               "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON": sa, "LORA_CLOUD_VAST_URL": settings.vast_url,
               inference.ENV_IDLE: f"{session.idle_minutes:g}", inference.ENV_MAX_HOURS: f"{session.max_hours:g}",
               inference.ENV_PRECISION: session.precision, inference.ENV_PORT: str(session.remote_port)}
        if settings.gcs_project:
            env["LORA_CLOUD_GCS_PROJECT"] = settings.gcs_project
        files = inference.model_files(session.precision).values()
        env.update(hub_token_env(settings, all(storage.exists(layout.model_key(f)) for f, _ in files)))
        return env

    async def start(self, req: SessionRequest) -> dict[str, Any]:
        """Rent a GPU for a remote ComfyUI, or return the live session (``attached``). Returns once
        the instance is rented; :meth:`wait_ready` waits for ComfyUI."""
        from ...training.estimate import resolve_gpu

        settings = self.core.settings
        req.checked(settings.session_max_hours)
        clock = self.core.clock
        gpu_name, gpu_vram = resolve_gpu(req.gpu) if req.gpu else (None, None)
        session = Session(id=new_session_id(clock), idle_minutes=req.idle_minutes, max_hours=req.max_hours,
                          precision=req.precision, remote_port=settings.comfy_remote_port,
                          created_at=clock(), updated_at=clock())
        storage = await asyncio.to_thread(lambda: self.core.storage)
        await asyncio.to_thread(self._instance_env, session, storage)  # clear errors before renting (or writing)
        # the session's id (so its label) says which bucket it lives in: only homes that read it judge it
        session.id = with_bucket_tag(session.id, await asyncio.to_thread(launch_bucket_id, storage, self.core.state))
        env = await asyncio.to_thread(self._instance_env, session, storage)
        key = await asyncio.to_thread(self.ssh_key)
        budgets = Budgets.from_settings(settings)
        async with self.core.provider("vast")() as provider:
            if hasattr(provider, "ensure_ssh_key"):
                await provider.ensure_ssh_key(key.public_key)  # instances created from now on accept it
            offer = await self._choose_offer(provider, req, gpu_name, gpu_vram, budgets.max_dph)
            month = await asyncio.to_thread(CostLedger(self.core.state, clock).month_usd)
            expected = offer.dph_total * req.max_hours
            check_launch(budgets, offer.dph_total, month)
            if budgets.max_run_usd and expected > budgets.max_run_usd:
                raise BudgetExceeded(f"{req.max_hours:g} h on the cheapest fitting offer (${offer.dph_total:.3f}/hr) "
                                     f"could cost ${expected:.2f}, above max_run_usd ${budgets.max_run_usd:g}: "
                                     "lower --max-hours or raise the budget")
            session.gpu, session.dph, session.state = offer.gpu_name, offer.dph_total, SessionState.LAUNCHING
            blocking = await asyncio.to_thread(self.core.state.claim_kv, _KEY, _KEY + session.id,
                                               json.dumps(session.to_dict(), sort_keys=True), _is_live)
            if blocking is not None:  # a live session exists (another click, another process)
                return {**await asyncio.to_thread(self._view, _decode(*blocking)), "attached": True}
            spec = LaunchSpec(image=settings.inference_image, label=session_label(session.id), disk_gb=DISK_GB,
                              env=env, onstart=START_SCRIPT, runtype="ssh")
            try:
                inst = await provider.launch(offer, spec)
            except BaseException as exc:
                await self._launch_failed(provider, session, exc)
                raise
            await asyncio.to_thread(self._record_instance, session.id, inst)
            if hasattr(provider, "attach_ssh_key"):
                try:
                    await provider.attach_ssh_key(str(inst.id), key.public_key)
                except LoraCloudError as exc:  # the account key covers it; this is belt and braces
                    log.info("could not attach the SSH key to instance %s: %s", inst.id, exc.message)
        view = await self.get(session.id)
        self._emit(view)
        await self.instances.announce()
        return {**view, "attached": False, "expected_max_usd": round(expected, 2)}

    async def _choose_offer(self, provider: Provider, req: SessionRequest, gpu_name: str | None,
                            gpu_vram: float | None, max_dph: float) -> Any:
        from ...errors import OfferUnavailable

        offers = await provider.search(OfferRequest(
            gpu_names=[gpu_name] if gpu_name else [], min_vram_gb=req.vram_gb if not gpu_name else 0.0,
            min_disk_gb=DISK_GB, max_dph=max_dph or None, min_reliability=0.9, allocated_storage_gb=DISK_GB))
        offers = [o for o in offers if o.dph_total > 0]
        if not offers:
            what = gpu_name or f"{req.vram_gb:g} GB of VRAM"
            raise OfferUnavailable(f"no vast.ai offer with {what} under ${max_dph:g}/hr (max_dph) right now")
        return min(offers, key=lambda o: (o.dph_total, -o.reliability))

    def _record_instance(self, session_id: str, inst: Instance) -> None:
        self.core.state.put_instance(inst, None, seen_at=self.core.clock())  # its age counts from here
        self._update(session_id, instance_id=str(inst.id), state=SessionState.STARTING,
                     ssh_host=inst.ssh_host, ssh_port=inst.ssh_port)

    async def _launch_failed(self, provider: Provider, session: Session, exc: BaseException) -> None:
        message = getattr(exc, "message", None) or ("the start was interrupted" if isinstance(
            exc, (asyncio.CancelledError, KeyboardInterrupt)) else f"{type(exc).__name__}: {exc}")
        try:
            await self.instances.destroy_labelled(provider, session_label(session.id))
        except LoraCloudError as cleanup:
            log.warning("cleanup after a failed session start failed (the guard retries): %s", cleanup.message)
        await asyncio.to_thread(self._update, session.id, state=SessionState.FAILED,
                                error=f"start failed: {message}")

    # ---- ready -------------------------------------------------------------------------------
    async def wait_ready(self, session_id: str | None = None, *, timeout: float = 1800.0, poll_s: float = 3.0,
                         on_status: Callable[[dict[str, Any]], Any] | None = None,
                         sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> dict[str, Any]:
        """Until the session's ComfyUI answers through its tunnel. A session that ends, cannot be
        reached safely (a changed host key) or is not ready in ``timeout`` is destroyed (nothing
        is left billing for a session nobody can use) and the error raised."""
        from ...remote.hostkeys import HostKeyChanged

        session = await self._resolve(session_id)
        deadline = self.core.clock() + timeout
        last = ""
        delay = min(0.25, poll_s)  # a quick first look, then every poll_s
        while True:
            session = await self._resolve(session.id)
            if session.state is SessionState.READY and await self._answers(session):
                view = await self.get(session.id)
                return view
            if session.state.is_terminal:
                raise ProviderError(f"session {session.id} ended ({session.state.value})"
                                    + (f": {session.error}" if session.error else ""))
            try:
                last = await self._step_towards_ready(session) or last
            except HostKeyChanged as exc:
                await self._fail(session, exc.message)
                raise
            except LoraCloudError as exc:
                if isinstance(exc, TunnelError):
                    last = exc.message
                else:
                    await self._fail(session, exc.message)
                    raise
            session = await self._resolve(session.id)
            if session.state is SessionState.READY:
                view = await self.get(session.id)
                self._emit(view)
                return view
            if on_status is not None:
                result = on_status({**await self.get(session.id), "message": last})
                if asyncio.iscoroutine(result):
                    await result
            if self.core.clock() > deadline:
                message = f"not ready after {timeout:g} s ({last or 'no answer'}); destroyed"
                await self._fail(session, message)
                raise TunnelError(f"session {session.id} was {message}")
            await sleep(delay)
            linked = self._tunnels.get(session.id)
            delay = 0.5 if linked is not None and linked.alive else min(delay * 2, poll_s)

    async def _step_towards_ready(self, session: Session) -> str:
        """One look: the supervisor's report, the instance, then ComfyUI through the tunnel."""
        try:
            status = await asyncio.to_thread(inference.read_session_status, self.core.storage, session.id)
        except (StorageError, CorruptRecord):
            status = None
        if status is not None and status.state.is_terminal:
            raise ProviderError(f"the session's ComfyUI reported {status.state.value}: "
                                f"{status.error or status.message}")
        tunnel = self._tunnels.get(session.id)
        if tunnel is not None and tunnel.alive:  # the link is up: only ComfyUI is awaited (a local call)
            if await self._answers(session):
                await asyncio.to_thread(self._update, session.id, state=SessionState.READY,
                                        ready_at=self.core.clock())
                return "ready"
            return status.message if status is not None and status.message else "waiting for ComfyUI"
        async with self.core.provider(session.provider)() as provider:
            inst = await provider.get(session.instance_id) if session.instance_id else None
        if session.instance_id and inst is None:
            raise ProviderError(f"instance {session.instance_id} of session {session.id} is gone")
        if inst is None:
            return "waiting for the instance"
        if inst.state in (InstanceState.EXITED, InstanceState.STOPPED) and inst.intended_state == "running":
            raise ProviderError(f"instance {inst.id} {inst.state.value}: {inst.status_msg}")
        if inst.state is not InstanceState.RUNNING or not inst.ssh_port or not inst.ssh_host:
            return f"instance {inst.state.value}: {inst.status_msg}".strip(": ")
        if (inst.ssh_host, inst.ssh_port) != (session.ssh_host, session.ssh_port):
            session = await asyncio.to_thread(self._update, session.id, ssh_host=inst.ssh_host,
                                              ssh_port=inst.ssh_port)
        await self.tunnel(session.id, _session=session)
        if await self._answers(session):
            await asyncio.to_thread(self._update, session.id, state=SessionState.READY, ready_at=self.core.clock())
            return "ready"
        return status.message if status is not None and status.message else "waiting for ComfyUI"

    async def _answers(self, session: Session) -> bool:
        from ...remote.comfyui import ComfyClient

        tunnel = self._tunnels.get(session.id)
        if tunnel is None or not tunnel.alive:
            return False
        try:
            async with ComfyClient(tunnel.url, timeout=15) as client:
                await client.ping()
        except (TunnelError, ComfyUIError):  # not answering, or not (yet) answering as ComfyUI does
            return False
        return True

    async def _fail(self, session: Session, message: str) -> None:
        """End a session that cannot be used: destroy its instance, record why."""
        try:
            await self._destroy(session, SessionState.FAILED, message)
        except LoraCloudError as exc:
            log.warning("could not destroy session %s: %s (the guard retries)", session.id, exc.message)
            await asyncio.to_thread(self._update, session.id, state=SessionState.FAILED, error=message)

    # ---- the tunnel ----------------------------------------------------------------------------
    async def tunnel(self, session_id: str | None = None, *, _session: Session | None = None) -> Any:
        """This process's tunnel to the session's ComfyUI (made on first use, then reused; it
        reconnects by itself). Any loop may call this: the tunnel lives on the tunnel loop."""
        session = _session or await self._resolve(session_id)
        if session.state.is_terminal:
            raise ConfigError(f"session {session.id} has ended ({session.state.value})")
        if not session.ssh_host or not session.ssh_port:
            async with self.core.provider(session.provider)() as provider:
                inst = await provider.get(session.instance_id) if session.instance_id else None
            if inst is None or not inst.ssh_port or not inst.ssh_host:
                raise TunnelError(f"session {session.id} has no SSH endpoint yet (its instance is still starting)")
            session = await asyncio.to_thread(self._update, session.id, ssh_host=inst.ssh_host, ssh_port=inst.ssh_port)
        key = await asyncio.to_thread(self.ssh_key)
        return await self._tunnel_loop.run(self._open_tunnel(session, key.private_path))

    async def _open_tunnel(self, session: Session, key_path: Path) -> Any:
        from ...remote.tunnel import SshTarget, Tunnel

        current = self._tunnels.get(session.id)
        target = SshTarget(str(session.ssh_host), int(session.ssh_port or 22), self.core.settings.ssh_user,
                           f"{session.provider}:{session.instance_id}")
        if current is not None and current.alive and current.target == target:
            return current
        if current is not None:
            await current.close()
        tunnel = await Tunnel(target, key_path, self.host_keys(), session.remote_port).start()
        self._tunnels[session.id] = tunnel
        return tunnel

    async def _close_tunnel(self, session_id: str) -> None:
        tunnel = self._tunnels.pop(session_id, None)
        if tunnel is not None:
            await self._tunnel_loop.run(tunnel.close())

    async def comfy_url(self) -> str | None:
        """The live session's ComfyUI (through this process's tunnel) when one is ready, else None:
        where a caller that can queue on any ComfyUI (the LoRA test) should queue first."""
        session = await asyncio.to_thread(self._live_record)
        if session is None or session.state is not SessionState.READY:
            return None
        return (await self.tunnel(session.id)).url

    async def url(self, session_id: str | None = None) -> str:
        """The local URL of the session's ComfyUI (through this process's tunnel)."""
        return (await self.tunnel(session_id)).url

    # a process that holds a tunnel for others (the CLI's `comfy tunnel`), so a URL outlives the command
    def keeper(self, session_id: str) -> dict[str, Any] | None:
        """The live tunnel keeper of a session: ``{"pid", "port", "url"}``, or None."""
        from ...storage.base import pid_alive

        raw = self.core.state.get_kv(_KEEPER + session_id)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not pid_alive(data["pid"]):
            return None
        return data

    def record_keeper(self, session_id: str, pid: int | None, port: int | None = None) -> None:
        value = json.dumps({"pid": pid, "port": port, "url": f"http://127.0.0.1:{port}"}) if pid else ""
        self.core.state.set_kv(_KEEPER + session_id, value)

    # ---- stopping ----------------------------------------------------------------------------
    async def stop(self, session_id: str | None = None) -> dict[str, Any]:
        """Destroy the session's instance (billing ends; its outputs stay in the bucket)."""
        session = await self._resolve(session_id)
        if session.state.is_terminal:
            raise ConfigError(f"session {session.id} has already ended ({session.state.value})")
        destroyed = await self._destroy(session, SessionState.STOPPED, "stopped by the user")
        view = await self.get(session.id)
        return {**view, "destroyed_instances": destroyed}

    async def _destroy(self, session: Session, state: SessionState, message: str) -> list[str]:
        await self._close_tunnel(session.id)
        async with self.core.provider(session.provider)() as provider:
            known = [session.instance_id] if session.instance_id else []
            destroyed = await self.instances.destroy_labelled(provider, session_label(session.id), known)
        await asyncio.to_thread(self._update, session.id, state=state,
                                error=None if state is SessionState.STOPPED else message)
        try:
            await asyncio.to_thread(inference.end_session_in_bucket, self.core.storage, session.id, state, message)
        except LoraCloudError as exc:
            log.warning("could not mark session %s %s in the bucket: %s", session.id, state.value, exc.message)
        for iid in destroyed:
            await asyncio.to_thread(self.host_keys().forget, f"{session.provider}:{iid}")
        self._emit(await self.get(session.id))
        await self.instances.announce()
        return destroyed

    async def generate_watched(self, workflow: "dict[str, Any] | Workflow", *, lora: str | None = None,
                               progress: Callable[[int, int], Any] | None = None,
                               interrupted: Callable[[], Any] | None = None, poll_s: float = 0.25,
                               start: SessionRequest | None = None) -> dict[str, Any]:
        """:meth:`generate` for a caller that can only poll (the Remote Generate node): ``progress``
        and ``interrupted`` are called from the caller's side every ``poll_s``, never inside the
        generation, and anything they raise (ComfyUI's Cancel) interrupts the prompt on the
        remote side before it propagates. With ``start``, a session is rented first when none is
        live (Cancel while it starts stops the waiting, never the session: its idle minutes end it)."""
        state = {"value": 0, "max": 0}

        async def work() -> dict[str, Any]:
            if start is not None:
                current = await self.current()
                if current is None:
                    current = await self.start(start)
                if current["state"] != SessionState.READY.value:
                    await self.wait_ready(current["id"])
            return await self.generate(workflow, lora=lora,
                                       progress=lambda v, m, node: state.update(value=v, max=m))

        task = asyncio.ensure_future(work())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=poll_s)
                if progress is not None and state["max"]:
                    progress(state["value"], state["max"])
                if interrupted is not None:
                    interrupted()
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        return task.result()

    async def _still_there(self, session: Session) -> None:
        """Raise when a session whose link is down has in fact ended (its image stopped it, the
        guard did, or its instance is gone): there is nothing to reconnect to."""
        try:
            status = await asyncio.to_thread(inference.read_session_status, self.core.storage, session.id)
        except (StorageError, CorruptRecord):
            status = None
        if status is not None and status.state.is_terminal:
            raise ProviderError(f"session {session.id} ended ({status.state.value}: {status.message})")
        async with self.core.provider(session.provider)() as provider:
            if session.instance_id and await provider.get(session.instance_id) is None:
                raise ProviderError(f"session {session.id} ended: its instance {session.instance_id} is gone")

    # ---- outputs -------------------------------------------------------------------------------
    async def outputs(self, limit: int = 60) -> dict[str, Any]:
        """``{"outputs": [{"session", "file", "size", "updated"}], "problems"}``: the newest
        images the remote sessions pushed to the bucket (names no route could serve, and files
        that are not images by their bytes, are left out and reported)."""
        return await asyncio.to_thread(self._outputs, limit)

    def _outputs(self, limit: int) -> dict[str, Any]:
        from ..library.files import check_file_name
        from ..library.media import ImageSniffer

        storage = self.core.storage
        found: Listed[dict[str, Any]] = Listed()
        objs = sorted(storage.list(layout.OUTPUTS).objects, key=lambda o: o.updated or 0, reverse=True)
        sniffer = ImageSniffer()
        for obj in objs:
            rel = obj.key[len(layout.OUTPUTS):]
            parts = rel.split("/")
            if len(parts) != 2 or not layout.is_image(parts[1]):
                continue
            try:
                validate_name(parts[0], "session id")
                check_file_name(parts[1], "output name")
            except ConfigError as exc:
                found.problems.append(Problem.of(obj.key, exc))
                continue
            if sniffer.format_of(storage, obj) is None:
                found.problems.append(Problem(entry=obj.key[:300], message="not an image: left out of the gallery"))
                continue
            found.items.append({"session": parts[0], "file": parts[1], "size": obj.size, "updated": obj.updated})
            if len(found.items) >= limit:
                break
        return {"outputs": found.items, "problems": [p.to_dict() for p in found.problems]}

    async def output(self, session_id: str, file: str) -> Any:
        """One output image as the browser may get it (:class:`~.media.ServedFile`)."""
        from ..library.files import check_file_name
        from ..library.media import read_media, served_file

        check_file_name(file)
        key = layout.output_prefix(session_id) + file
        data = await asyncio.to_thread(lambda: read_media(self.core.storage, key))
        return served_file(data, file)

    # ---- generating ----------------------------------------------------------------------------
    async def generate(self, workflow: "dict[str, Any] | Workflow", *, session_id: str | None = None,
                       lora: str | None = None, out_dir: str | Path | None = None,
                       progress: Callable[[int, int, str | None], Any] | None = None,
                       client_id: str | None = None) -> dict[str, Any]:
        """Queue ``workflow`` on the session's ComfyUI, follow it to the end and return its images
        (``{"prompt_id", "images": [{"filename", "path"?, "data"}], "ignored"}``); with ``out_dir``
        they are also written there, each under a name of its own (:func:`save_output`).
        ``workflow`` is the API form, or a :class:`~.workflow_api.Workflow` (a canvas one is
        converted against the remote ComfyUI's ``/object_info``; ``ignored`` names the canvas
        nodes it left out). ``lora`` is fetched onto the remote side first. Cancelling the
        coroutine interrupts the prompt remotely. The tunnel reconnects underneath."""
        from ...remote.comfyui import ComfyClient
        from ..templates.workflow_api import Workflow

        job = workflow if isinstance(workflow, Workflow) else Workflow(workflow)

        session = await self._resolve(session_id)
        if session.state is not SessionState.READY:
            raise ConfigError(f"session {session.id} is {session.state.value}, not ready: wait for it "
                              "(lora-cloud comfy status)")
        tunnel = await self.tunnel(session.id)
        async with ComfyClient(tunnel.url, still_there=lambda: self._still_there(session)) as client:
            prompt = job.api(await client.object_info() if job.needs_object_info else None)
            if lora:
                await client.fetch_lora(lora)
            result = await client.run(prompt, progress=progress, client_id=client_id)
        images = []
        dest = Path(out_dir).expanduser() if out_dir else None
        for image in result.images:
            entry: dict[str, Any] = {"filename": image.filename, "subfolder": image.subfolder, "node": image.node,
                                     "data": image.data}
            if dest is not None:
                entry["path"] = str(await asyncio.to_thread(save_output, dest, image.filename, image.data))
            images.append(entry)
        return {"session": session.id, "prompt_id": result.prompt_id, "seconds": round(result.seconds, 2),
                "images": images, "ignored": job.ignored}


# ---- the images a session sends back ------------------------------------------------------------
# The formats of ComfyUI's image outputs (SaveImage and PreviewImage write PNG, SaveAnimatedWEBP
# WebP, a few packs JPEG): the only ones of the loader's allowlist the Remote Generate node decodes.
OUTPUT_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
# 6000x6000: above a 4x upscale of a Flux image, and still a ~430 MB tensor once decoded.
MAX_OUTPUT_PIXELS = 36_000_000
# every image of one prompt together, once decoded for the node (a float tensor of ~860 MB)
MAX_OUTPUT_BATCH_PIXELS = 2 * MAX_OUTPUT_PIXELS
MAX_SAME_NAME = 10_000


def decode_output_image(data: bytes, name: str) -> Any:
    """An image a remote ComfyUI sent, as an RGB Pillow image; :class:`ComfyUIError` for any other
    format (Pillow tries no other: an EPS would run Ghostscript) or more than
    :data:`MAX_OUTPUT_PIXELS` (read from the header, before a pixel is decoded). Blocking."""
    from ...dataset.load import decode_image
    from ...errors import ImageLoadError

    try:
        return decode_image(data, name=name, max_pixels=MAX_OUTPUT_PIXELS, formats=OUTPUT_IMAGE_FORMATS).image
    except ImageLoadError as exc:
        raise ComfyUIError(f"the remote ComfyUI sent an image this node does not read (only PNG, JPEG and "
                           f"WebP up to {MAX_OUTPUT_PIXELS / 1e6:.0f} megapixels): {exc.message}") from None


def decode_output_images(images: list[tuple[str, bytes]]) -> list[Any]:
    """``(name, bytes)`` of a prompt's images, each decoded by :func:`decode_output_image`, after
    their pixels together were read from the headers and found within
    :data:`MAX_OUTPUT_BATCH_PIXELS` (a few KB of one-colour PNGs can claim gigabytes). Blocking."""
    import io
    import warnings

    from PIL import Image

    from ...dataset.load import pillow_openers

    total = 0
    for name, data in images:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data), formats=pillow_openers(OUTPUT_IMAGE_FORMATS)) as im:
                    total += im.width * im.height
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # not one of the formats: decode_output_image below says so, naming it
    if total > MAX_OUTPUT_BATCH_PIXELS:
        raise ComfyUIError(f"the remote ComfyUI sent {len(images)} images of {total / 1e6:.0f} megapixels together, "
                           f"more than the {MAX_OUTPUT_BATCH_PIXELS / 1e6:.0f} this node decodes at once")
    return [decode_output_image(data, name) for name, data in images]


def save_output(dest: Path, filename: str, data: bytes) -> Path:
    """Write one output image into ``dest`` and return its path, never over another file: a second
    image of the same name (two save nodes with one prefix in different subfolders, a remote that
    restarted its counter, an earlier run's file) becomes ``name-2.png``, ``name-3.png``... The
    name is the remote's file name alone (the client refused separators and ``..``), never a
    hidden file. Blocking."""
    base = Path(filename).name.lstrip(".") or "image"
    stem, suffix = (base.rsplit(".", 1)[0], "." + base.rsplit(".", 1)[1]) if "." in base else (base, "")
    dest.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_SAME_NAME + 1):
        path = dest / (base if n == 1 else f"{stem}-{n}{suffix}")
        try:
            with open(path, "xb") as f:  # x: an existing file is never replaced, even by a racing writer
                f.write(data)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"{dest} already holds {MAX_SAME_NAME} images named like {base}: choose another --out folder")


# ---- the guard's part -------------------------------------------------------------------------
class SessionGuard:
    """Sessions' share of a guard pass, over the pass's one listing (see the module docstring):
    ownership by :func:`~.ownership.decide_session`, adoption, idle minutes and max hours, and
    sessions whose instance vanished. Every record on its own: problems are reported, the pass
    goes on."""

    def __init__(self, provider: Provider, state: Any, storage: Any, *, clock: Callable[[], float] = time.time,
                 grace_s: float = 120.0, fresh_s: float = 1800.0, boot_grace_s: float = BOOT_GRACE_S,
                 emit: Callable[[str, dict[str, Any]], None] | None = None):
        self.provider, self.state, self.storage = provider, state, storage
        self.clock, self.grace_s, self.fresh_s, self.boot_grace_s = clock, grace_s, fresh_s, boot_grace_s
        self.emit = emit or (lambda event, data: None)

    def _record(self, session_id: str) -> LocalSession:
        try:
            raw = self.state.get_kv(_KEY + session_id)
        except CorruptRecord as exc:
            return LocalSession(damaged=exc.message)
        if not raw:
            return LocalSession()
        try:
            return LocalSession(session=_decode(_KEY + session_id, raw))
        except CorruptRecord as exc:
            return LocalSession(corrupt=exc.message)

    def _save(self, session: Session, **fields: Any) -> None:
        for k, v in fields.items():
            setattr(session, k, v)
        session.__post_init__()
        session.updated_at = self.clock()
        self.state.set_kv(_KEY + session.id, json.dumps(session.to_dict(), sort_keys=True))

    def known_here(self, session_id: str) -> bool | None:
        """Whether this home's store has the session (a record it cannot read counts); None when
        the store itself cannot be read."""
        local = self._record(session_id)
        return None if local.damaged else (local.session is not None or bool(local.corrupt))

    async def run_once(self, instances: list[Instance], *, now: float, problems: Problems,
                       facts: BucketFacts | None = None,
                       attributed: dict[str, Attributed] | None = None) -> dict[str, Any]:
        """The sessions' share of a pass; ``facts`` and ``attributed`` are the pass's (default:
        learnt here). Only this bucket's sessions are judged (``ownership.attribute``)."""
        report: dict[str, Any] = {"owned": [], "adopted": [], "destroyed": [], "waiting": [], "doubt": [],
                                  "foreign": [], "unattributed": [], "idle": [], "timed_out": [], "lost": [],
                                  "failed": [], "ended": [], "why": {}}
        labelled = [i for i in instances if i.session_id]
        if facts is None:
            facts = await asyncio.to_thread(learn_bucket, self.storage, self.state, clock=self.clock)
            report_facts(facts, problems)
        if attributed is None:
            attributed = await asyncio.to_thread(attribute_all, labelled, facts, self.storage,
                                                 run_known=lambda rid: None, session_known=self.known_here)
            report_attribution(attributed, labelled, problems)
        for inst in labelled:
            iid = str(inst.id)
            whose = attributed.get(iid) or Attributed(Attribution.UNKNOWN, "not attributed this round")
            if whose.kind in (Attribution.FOREIGN, Attribution.UNKNOWN):  # never judged here
                report["foreign" if whose.kind is Attribution.FOREIGN else "unattributed"].append(iid)
                report["why"][iid] = whose.why
                continue
            try:
                await self._one(inst, now, facts, report, problems)
            except CorruptRecord as exc:
                problems.add(kinds.CORRUPT_ROW, iid, exc.message)
            except Exception as exc:  # noqa: BLE001 - one record must never stop the pass
                problems.add(kinds.UNEXPECTED, iid, f"session instance {iid}: {type(exc).__name__}: {exc}")
        try:
            await self._settle(instances, now, report, problems)
        except CorruptRecord as exc:
            problems.add(kinds.STATE_STORE, self.state.path, exc.message)
        return report

    async def _one(self, inst: Instance, now: float, facts: BucketFacts, report: dict[str, Any],
                   problems: Problems) -> None:
        iid, sid = str(inst.id), str(inst.session_id)
        local = await asyncio.to_thread(self._record, sid)
        view = None
        if not local.damaged:
            view = await asyncio.to_thread(session_bucket_view, self.storage, sid, facts.now, self.fresh_s) \
                if _valid_id(sid) else None
            if view is not None and view.kind is Bucket.CORRUPT:
                problems.add(kinds.CORRUPT_STATUS, sid, view.reason)
            elif view is not None and view.kind is Bucket.UNREADABLE:
                problems.add(kinds.BUCKET, sid, f"status of session {sid} unreadable: {view.reason}")
        else:
            problems.add(kinds.STATE_STORE, self.state.path, local.damaged)
        decision: Decision = decide_session(sid if _valid_id(sid) else None, local, view)
        report["why"][iid] = decision.why
        if decision.verdict is Verdict.DOUBT:
            report["doubt"].append(iid)
            if local.corrupt:  # a damaged record still has hours: it must not bill forever
                await self._damaged_hours(inst, sid, now, report, problems)
            return
        if decision.verdict is Verdict.UNOWNED:
            await self._unowned(inst, decision.why, now, report, problems)
            return
        await asyncio.to_thread(UnownedGrace(self.state, _UNOWNED, self.grace_s).owned, iid)
        report["owned"].append(iid)
        session = local.session
        if session is None or session.state.is_terminal:
            return  # another controller's session: its controller (and its image) enforce its limits
        if session.instance_id != iid:
            fields: dict[str, Any] = {"instance_id": iid, "gpu": inst.gpu_name, "dph": inst.dph_total}
            if session.state is SessionState.LAUNCHING:
                fields["state"] = SessionState.STARTING
            await asyncio.to_thread(self._save, session, **fields)
            report["adopted"].append(iid)
        status = view.status if view is not None and view.kind in (Bucket.LIVE, Bucket.STALE, Bucket.UNDATED) \
            else None
        age = now - session.created_at
        if age >= session.max_hours * 3600:
            await self._end(session, inst, SessionState.TIMED_OUT,
                            f"reached its {session.max_hours:g} h limit (max hours)", report["timed_out"], report,
                            problems)
            return
        idle_limit = session.idle_minutes * 60 + GUARD_SLACK_S
        if status is not None and status.state is SessionState.READY:
            idle = status.idle_s + await asyncio.to_thread(self._since_report, sid, facts)
            if idle >= idle_limit:
                await self._end(session, inst, SessionState.IDLE,
                                f"idle for {idle / 60:.0f} min (idle limit {session.idle_minutes:g} min)",
                                report["idle"], report, problems)
        elif status is None and age >= self.boot_grace_s + idle_limit:
            await self._end(session, inst, SessionState.FAILED,
                            f"its ComfyUI never reported in {age / 60:.0f} min", report["failed"], report, problems)

    async def _damaged_hours(self, inst: Instance, sid: str, now: float, report: dict[str, Any],
                             problems: Problems) -> None:
        """The hours of a session whose record cannot be read (see "the records" above): its own
        max_hours when readable, else MAX_SESSION_HOURS, from the earlier of its recorded start
        (when readable) and its instance's first sighting here; past them, it is timed out."""
        iid = str(inst.id)
        raw = await asyncio.to_thread(self.state.get_kv, _KEY + sid)
        seen = await asyncio.to_thread(first_seen, self.state, inst.provider, iid)
        born = now if seen is None else seen
        session, wrong = salvage(_KEY + sid, raw, born=born)
        fields = {w.split(" ", 1)[0] for w in wrong}
        if "created_at" not in fields:
            born = min(born, session.created_at)
        why = "; ".join(wrong)[:300] or "it names another session"
        problems.add(kinds.CORRUPT_ROW, _KEY + sid, f"the record of session {sid} cannot be read ({why}): its "
                                                    f"instance {iid} is held to {session.max_hours:g} h from "
                                                    f"{_clock(born)}")
        if now - born < session.max_hours * 3600:
            return
        session.instance_id, session.created_at = iid, born
        report["doubt"].remove(iid)
        limit = "the most a session may have" if "max_hours" in fields else "its max hours"
        await self._end(session, inst, SessionState.TIMED_OUT,
                        f"reached {session.max_hours:g} h, {limit} (its record is damaged)", report["timed_out"],
                        report, problems)

    def _since_report(self, session_id: str, facts: BucketFacts) -> float:
        """How long ago the status was written, both ends on the bucket's clock (never the rented
        host's, never ours); 0 when that cannot be told this round (nothing is judged on it)."""
        written = written_at(self.storage, inference.status_key(session_id))
        if written is None or facts.now is None:
            return 0.0
        return max(0.0, facts.now - written)

    async def _unowned(self, inst: Instance, why: str, now: float, report: dict[str, Any], problems: Problems) -> None:
        iid = str(inst.id)
        if await asyncio.to_thread(UnownedGrace(self.state, _UNOWNED, self.grace_s).waiting, iid, now, problems):
            report["waiting"].append(iid)
            return
        done = await destroy_instance(self.provider, self.state, iid, why=why, what=f"session instance {iid}",
                                      label=inst.label, at=now, problems=problems)
        if done.gone:
            report["destroyed"].append(iid)

    async def _end(self, session: Session, inst: Instance, state: SessionState, why: str, bucket: list[str],
                   report: dict[str, Any], problems: Problems) -> None:
        iid = str(inst.id)
        done = await destroy_instance(self.provider, self.state, iid, why=why,
                                      what=f"instance {iid} of session {session.id}", label=inst.label,
                                      clock=self.clock, problems=problems)
        if not done.gone:
            return
        report["destroyed"].append(iid)
        bucket.append(session.id)
        report["why"][iid] = why
        await asyncio.to_thread(self._save, session, state=state, error=why)
        try:
            await asyncio.to_thread(inference.end_session_in_bucket, self.storage, session.id, state, why)
        except LoraCloudError as exc:
            problems.add(kinds.BUCKET, session.id, f"could not mark session {session.id} ended in the bucket: "
                                                   f"{exc.message}")
        self.emit(SESSION_EVENT, session_event({**session.to_dict(), "live": False}, why))

    async def _settle(self, instances: list[Instance], now: float, report: dict[str, Any], problems: Problems) -> None:
        """Live sessions whose instance is gone, and launches that never made one."""
        listed = {str(i.id) for i in instances}
        records = await asyncio.to_thread(self._records, problems)
        for session in records:
            if session.state.is_terminal or session.provider != self.provider.name:
                continue
            try:
                if session.instance_id and session.instance_id not in listed:
                    if await self.provider.get(session.instance_id) is not None:
                        continue  # a listing that missed it is not a vanished instance
                    try:
                        status = await asyncio.to_thread(inference.read_session_status, self.storage, session.id)
                    except LoraCloudError:
                        status = None
                    if status is not None and status.state.is_terminal:
                        await asyncio.to_thread(self._save, session, state=status.state,
                                                error=status.error or status.message or None)
                        report["ended"].append(session.id)
                    else:
                        message = f"instance {session.instance_id} vanished"
                        await asyncio.to_thread(self._save, session, state=SessionState.LOST, error=message)
                        report["lost"].append(session.id)
                    await asyncio.to_thread(self.state.mark_instance_destroyed, session.provider,
                                            session.instance_id, now)
                    self.emit(SESSION_EVENT, session_event({**session.to_dict(), "live": False}, session.error))
                elif not session.instance_id and now - session.updated_at >= self.grace_s:
                    await asyncio.to_thread(self._save, session, state=SessionState.FAILED,
                                            error="the start was interrupted before an instance was created")
                    report["failed"].append(session.id)
            except LoraCloudError as exc:
                problems.add(kinds.LISTING, session.id, f"session {session.id}: {exc.message}")

    def _records(self, problems: Problems) -> list[Session]:
        out = []
        for key, raw in self.state.kv_items(_KEY):
            try:
                out.append(_decode(key, raw))
            except CorruptRecord as exc:
                problems.add(kinds.CORRUPT_ROW, key, exc.message)
        return out


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _valid_id(session_id: str) -> bool:
    try:
        validate_name(session_id, "session id")
    except ConfigError:
        return False
    return True
