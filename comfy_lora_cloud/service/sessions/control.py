"""Remote ComfyUI sessions: a rented GPU running the inference image, reached over SSH.

:class:`Sessions` is the service the CLI (``lora-cloud comfy ...``), the Remote Generate node and
the sidebar's Generate section call: starting a session (the cheapest offer that fits inference,
``launch.py``, labelled ``lora-cloud:session:<id>`` so the guard knows it), waiting until its
ComfyUI answers, its tunnel (``tunnels.py``), generating through it, stopping it, its views and
live cost (``views.py``) and its outputs in the bucket (``outputs.py``). The guard's session rules
are ``guard.py``; the records, ``store.py``.

Money rules, as for runs (``service/runs/launch.py``): the intent is recorded before the create call
(one live session per controller, claimed in one transaction, so two clicks rent one machine),
the instance id right after; a failed launch destroys what its label finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ...errors import (BudgetExceeded, ComfyUIError, ConfigError, CorruptRecord, LoraCloudError, ObjectNotFound,
                       ProviderError, StorageError, TunnelError)
from ...models import Instance, InstanceState, Session, SessionState, validate_name
from ...providers.base import LaunchSpec, Provider, session_label, with_bucket_tag
from ...training import inference
from ..events import SESSION_EVENT
from ..home import row_to_session
from ..money import Budgets, check_launch
from ..money import CostLedger
from ..money import launch_bucket_id
from .images import save_output
from .launch import DISK_GB, START_SCRIPT, choose_offer, instance_env
from .outputs import list_outputs, read_output
from .request import SessionRequest, new_session_id, session_event
from .store import live_record, put_session, update_session
from .store import records as recorded
from .tunnels import TunnelKeeper, Tunnels, keeper, record_keeper
from .views import (Gallery, GeneratedImage, Generation, SessionView, StartedSession, StoppedSession, list_views,
                    session_view)

if TYPE_CHECKING:
    from ..core import Core
    from ..loop import Loop
    from ..money import Instances
    from ..templates import Workflow

log = logging.getLogger(__name__)


class Sessions:
    """Remote ComfyUI sessions started from this home (see the module docstring)."""

    def __init__(self, core: Core, instances: Instances, loop: Loop):
        self.core = core
        self.instances = instances
        self.tunnels = Tunnels(loop)  # every tunnel lives on the process's one background loop

    # ---- records (store.py) -----------------------------------------------------------------
    def _get(self, session_id: str) -> Session | None:
        return self.core.state.get_session(session_id)

    def _put(self, session: Session) -> Session:
        return put_session(self.core.state, session, self.core.clock())

    def _update(self, session_id: str, **fields: Any) -> Session:
        return update_session(self.core.state, session_id, self.core.clock(), **fields)

    def records(self, *, on_corrupt: Callable[[CorruptRecord], None] | None = None) -> list[Session]:
        """Every session this controller recorded, newest first (unreadable ones skipped)."""
        return recorded(self.core.state, on_corrupt=on_corrupt)

    def _live_record(self) -> Session | None:
        return live_record(self.core.state)

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
    async def list(self, limit: int = 20) -> list[SessionView]:
        """The views of the newest ``limit`` sessions recorded here. A record that cannot be read
        is listed too, as damaged (``damaged``: why; what can be read of it), never left out
        silently nor a failed listing."""
        return await asyncio.to_thread(self._list, limit)

    def _list(self, limit: int) -> list[SessionView]:
        return list_views(self.core, limit, self._view)

    async def get(self, session_id: str | None = None) -> SessionView:
        """One session's view (default: the live one)."""
        session = await self._resolve(session_id)
        return await asyncio.to_thread(self._view, session)

    async def current(self) -> SessionView | None:
        """The live session's view, or None."""
        session = await asyncio.to_thread(self._live_record)
        return await asyncio.to_thread(self._view, session) if session else None

    def _view(self, session: Session) -> SessionView:
        return session_view(self.core, session, self.tunnels.get(session.id))

    def _emit(self, view: SessionView) -> None:
        self.core.emit(SESSION_EVENT, session_event(view.to_dict()))

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
    async def start(self, req: SessionRequest) -> StartedSession:
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
        await asyncio.to_thread(instance_env, settings, session, storage)  # clear errors before renting (or writing)
        # the session's id (so its label) says which bucket it lives in: only homes that read it judge it
        session.id = with_bucket_tag(session.id, await asyncio.to_thread(launch_bucket_id, storage, self.core.state))
        env = await asyncio.to_thread(instance_env, settings, session, storage)
        key = await asyncio.to_thread(self.ssh_key)
        budgets = Budgets.from_settings(settings)
        async with self.core.provider("vast")() as provider:
            if hasattr(provider, "ensure_ssh_key"):
                await provider.ensure_ssh_key(key.public_key)  # instances created from now on accept it
            offer = await choose_offer(provider, req, gpu_name, gpu_vram, budgets.max_dph)
            month = await asyncio.to_thread(CostLedger(self.core.state, clock).month_usd)
            expected = offer.dph_total * req.max_hours
            check_launch(budgets, offer.dph_total, month)
            if budgets.max_run_usd and expected > budgets.max_run_usd:
                raise BudgetExceeded(f"{req.max_hours:g} h on the cheapest fitting offer (${offer.dph_total:.3f}/hr) "
                                     f"could cost ${expected:.2f}, above max_run_usd ${budgets.max_run_usd:g}: "
                                     "lower --max-hours or raise the budget")
            session.gpu, session.dph, session.state = offer.gpu_name, offer.dph_total, SessionState.LAUNCHING
            blocking = await asyncio.to_thread(self.core.state.claim_session, session.to_dict())
            if blocking is not None:  # a live session exists (another click, another process)
                return StartedSession(await asyncio.to_thread(self._view, row_to_session(blocking)), attached=True)
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
        return StartedSession(view, attached=False, expected_max_usd=round(expected, 2))

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
                         on_status: Callable[[SessionView, str], Any] | None = None,
                         sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> SessionView:
        """Until the session's ComfyUI answers through its tunnel. A session that ends, cannot be
        reached safely (a changed host key) or is not ready in ``timeout`` is destroyed (nothing
        is left billing for a session nobody can use) and the error raised. ``on_status`` hears
        each look that found it not ready yet: its view and what it is waiting for."""
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
                result = on_status(await self.get(session.id), last)
                if asyncio.iscoroutine(result):
                    await result
            if self.core.clock() > deadline:
                message = f"not ready after {timeout:g} s ({last or 'no answer'}); destroyed"
                await self._fail(session, message)
                raise TunnelError(f"session {session.id} was {message}")
            await sleep(delay)
            delay = 0.5 if self.tunnels.alive(session.id) else min(delay * 2, poll_s)

    async def _step_towards_ready(self, session: Session) -> str:
        """One look: the supervisor's report, the instance, then ComfyUI through the tunnel."""
        try:
            status = await asyncio.to_thread(inference.read_session_status, self.core.storage, session.id)
        except (StorageError, CorruptRecord):
            status = None
        if status is not None and status.state.is_terminal:
            raise ProviderError(f"the session's ComfyUI reported {status.state.value}: "
                                f"{status.error or status.message}")
        if self.tunnels.alive(session.id):  # the link is up: only ComfyUI is awaited (a local call)
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

        tunnel = self.tunnels.get(session.id)
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
        reconnects by itself). Any loop may call this: the tunnel lives on the background loop."""
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
        return await self.tunnels.open(session, key.private_path, self.core.settings.ssh_user, self.host_keys())

    async def _close_tunnel(self, session_id: str) -> None:
        await self.tunnels.close(session_id)

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
    def keeper(self, session_id: str) -> TunnelKeeper | None:
        """The live tunnel keeper of a session, or None."""
        return keeper(self.core.state, session_id)

    def record_keeper(self, session_id: str, pid: int | None, port: int | None = None) -> None:
        record_keeper(self.core.state, session_id, pid, port)

    # ---- stopping ----------------------------------------------------------------------------
    async def stop(self, session_id: str | None = None) -> StoppedSession:
        """Destroy the session's instance (billing ends; its outputs stay in the bucket)."""
        session = await self._resolve(session_id)
        if session.state.is_terminal:
            raise ConfigError(f"session {session.id} has already ended ({session.state.value})")
        destroyed = await self._destroy(session, SessionState.STOPPED, "stopped by the user")
        return StoppedSession(await self.get(session.id), tuple(destroyed))

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
                               start: SessionRequest | None = None) -> Generation:
        """:meth:`generate` for a caller that can only poll (the Remote Generate node): ``progress``
        and ``interrupted`` are called from the caller's side every ``poll_s``, never inside the
        generation, and anything they raise (ComfyUI's Cancel) interrupts the prompt on the
        remote side before it propagates. With ``start``, a session is rented first when none is
        live (Cancel while it starts stops the waiting, never the session: its idle minutes end it)."""
        state = {"value": 0, "max": 0}

        async def work() -> Generation:
            if start is not None:
                current = await self.current()
                if current is None:
                    current = (await self.start(start)).view
                if current.state != SessionState.READY.value:
                    await self.wait_ready(current.id)
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
    async def outputs(self, limit: int = 60) -> Gallery:
        """The newest
        images the remote sessions pushed to the bucket (names no route could serve, and files
        that are not images by their bytes, are left out and reported)."""
        return await asyncio.to_thread(list_outputs, self.core.storage, limit)

    async def output(self, session_id: str, file: str) -> Any:
        """One output image as the browser may get it (:class:`~.media.ServedFile`)."""
        return await asyncio.to_thread(read_output, self.core.storage, session_id, file)

    # ---- generating ----------------------------------------------------------------------------
    async def generate(self, workflow: "dict[str, Any] | Workflow", *, session_id: str | None = None,
                       lora: str | None = None, out_dir: str | Path | None = None,
                       progress: Callable[[int, int, str | None], Any] | None = None,
                       client_id: str | None = None) -> Generation:
        """Queue ``workflow`` on the session's ComfyUI, follow it to the end and return its images
        (each with ``path`` set when written to disk); with ``out_dir``
        they are also written there, each under a name of its own (:func:`save_output`).
        ``workflow`` is the API form, or a :class:`~.workflow_api.Workflow` (a canvas one is
        converted against the remote ComfyUI's ``/object_info``; ``ignored`` names the canvas
        nodes it left out). ``lora`` is fetched onto the remote side first. Cancelling the
        coroutine interrupts the prompt remotely. The tunnel reconnects underneath."""
        from ...remote.comfyui import ComfyClient
        from ..templates import Workflow

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
            path = None
            if dest is not None:
                path = str(await asyncio.to_thread(save_output, dest, image.filename, image.data))
            images.append(GeneratedImage(image.filename, image.subfolder, image.node, image.data, path))
        return Generation(session.id, result.prompt_id, round(result.seconds, 2), tuple(images), tuple(job.ignored))
