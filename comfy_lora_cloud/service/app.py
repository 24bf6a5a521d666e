"""The composition root: one :class:`App`, built once from settings, that every edge uses.

The CLI (one ``App`` per command), ComfyUI's nodes, its routes and the pack's background loop (one
``App`` for the whole ComfyUI process, see ``comfy/wiring.py``) reach storage, the state store, the
GPU providers and each other only through it, so a behaviour cannot differ by entry point::

    app = App.open()                       # blocking: call it in a thread from async code
    await app.runs.stop(run_id)            # the same code from the CLI, a node and the sidebar
    await app.guard_pass()                 # the same guard from ComfyUI's loop, the CLI and cron

One package per noun, each behind its public face (its ``__init__``): :class:`~.runs.Runs`,
:class:`~.money.Instances`, :class:`~.library.Library`, :class:`~.money.Costs`,
:class:`~.money.Offers`, :class:`~.library.Mirror`, :class:`~.runs.Recoveries`,
:class:`~.templates.Templates`, :class:`~.sessions.Sessions`; :class:`~.notify.Notifier`
(``app.notify``) turns the events they emit into notifications. Each service is given this app as
a :class:`~.core.Core` (the settings, storage, state store, clock, event sink and providers,
read on each use so a settings change reaches them all at once) and, by name and type, each
neighbour it calls: its constructor says what it depends on.

Settings are re-read when ``config.toml`` or ``secrets.toml`` change (:class:`SettingsSource`): a
``lora-cloud budget set`` takes effect in a running ComfyUI within one guard round, and a broken file
keeps the last good settings (and says so) instead of stopping the guard. Storage is rebuilt when the
storage settings change, so nodes and routes never see two different buckets.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Mapping

from ..errors import ConfigError
from ..providers.base import Provider
from ..settings import CONFIG_FILE, SECRETS_FILE, Settings, default_home
from ..storage import Storage
from .core import Clock, ProviderFactory
from .events import Emit, no_emit
from .home import StateStore
from .loop import Loop

if TYPE_CHECKING:
    from .guard import GuardReport
    from .library import Offload

log = logging.getLogger(__name__)

PROVIDERS = ("vast", "local")


class SettingsSource:
    """The settings of one home, re-read when its files change.

    ``current()`` costs two ``stat`` calls at most once a second. Each read goes through
    :func:`~.settings_files.load_settings`: a file that loads cleanly becomes its last good copy
    on disk, and a damaged one (at start or later) gives way to that copy (else the built-in
    defaults) while :attr:`problem` says what is wrong and what is in force; the guard reports it
    every round. ``fall_back=False`` (the commands that do not guard) refuses a damaged home at
    the first read with the :class:`ConfigError` of :meth:`Settings.load`; once settings were
    read, a file that breaks later keeps them, as it does in ComfyUI.
    """

    def __init__(self, home: str | Path | None = None, *, check_every: float = 1.0,
                 clock: Clock = time.monotonic, initial: Settings | None = None, fall_back: bool = True,
                 **overrides: Any):
        self.home = Path(home).expanduser() if home else default_home()
        self.overrides = overrides
        self.check_every = check_every
        self.clock = clock
        self.fall_back = fall_back
        self.problem: str | None = None
        self.storage_unknown: str | None = None  # the guard's storage is in doubt (settings_files)
        self._lock = threading.Lock()
        self._settings: Settings | None = initial
        self._signature: tuple[Any, ...] | None = self._files_signature() if initial is not None else None
        self._checked = float("-inf")

    def invalidate(self) -> None:
        """Look at the files on the next read (after this process wrote them)."""
        with self._lock:
            self._checked = float("-inf")

    def _files_signature(self) -> tuple[Any, ...]:
        sig = []
        for name in (CONFIG_FILE, SECRETS_FILE):
            try:
                st = (self.home / name).stat()
                sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                sig.append(None)
        return tuple(sig)

    def current(self) -> Settings:
        from .home import load_settings

        with self._lock:
            now = self.clock()
            if self._settings is not None and now - self._checked < self.check_every:
                return self._settings
            self._checked = now
            signature = self._files_signature()
            if self._settings is not None and signature == self._signature:
                return self._settings
            try:
                loaded = load_settings(self.home, fall_back=self.fall_back or self._settings is not None,
                                       **self.overrides)
            except ConfigError as exc:
                if self._settings is None:
                    raise
                if self.problem != exc.message:
                    log.warning("settings changed but cannot be read; keeping the last good ones: %s", exc.message)
                self.problem = f"keeping the last good settings: {exc.message}"
                self._signature = signature  # report once per change, not on every call
                return self._settings
            self._settings, self._signature = loaded.settings, signature
            self.problem, self.storage_unknown = loaded.problem, loaded.storage_unknown
            return loaded.settings


class App:
    """Settings, storage, state, providers and the noun services, wired once."""

    def __init__(self, settings: Settings | SettingsSource, *, storage: Storage | None = None,
                 state: StateStore | None = None, emit: Emit | None = None, clock: Clock = time.time,
                 loras_dir: str | Path | None = None, providers: Mapping[str, ProviderFactory] | None = None,
                 python: str | None = None, offload: Offload | None = None, loop: Loop | None = None):
        from .doctor import Doctor
        from .library import Captions, Library, Mirror, ModelsCache, Offload, Uploads
        from .money import Costs, Instances, Offers
        from .notify import Notifier
        from .runs import Recoveries, RunOutputs, Runs, TrainConfigs
        from .sessions import Sessions
        from .templates import Templates

        self.source = settings if isinstance(settings, SettingsSource) else SettingsSource(settings.home, initial=settings)
        self._fixed_storage = storage
        self._state = state
        self.sink: Emit = emit or no_emit  # where events go (ComfyUI's websocket); see emit()
        self.clock = clock
        self._loras_dir = Path(loras_dir) if loras_dir else None
        # injected providers win over the configured ones (tests, the fake vast.ai server)
        self.providers: dict[str, ProviderFactory] = dict(providers or {})
        self.python = python  # the trainer's interpreter for local runs (tests); None: this one
        # the process's one background loop, for what outlives a call (the sessions' tunnels):
        # ComfyUI's wiring passes its own, which also runs the guard and the pollers; a CLI
        # process or a test gets one of its own (a thread only once something runs on it)
        self.loop = loop or Loop()
        self._lock = threading.Lock()
        self._storage: tuple[tuple[Any, ...], Storage] | None = None
        from .guard import GuardMemory

        self.guard_memory = GuardMemory()  # what the guard remembers from one pass to the next

        # each service gets the shared parts (this app, as a Core) and the neighbours it calls
        self.notify = Notifier(self)  # the one notifier: sees every event emit() sends
        # where heavy transfers and a preparation run: worker processes when ComfyUI built this
        # app (its wiring passes them in), this process for the CLI and tests
        self.offload = offload or Offload.here()
        self.library = Library(self, self.offload)
        self.instances = Instances(self)
        self.costs = Costs(self)
        self.offers = Offers(self)
        self.mirror = Mirror(self, self.library, self.offload)
        self.recovery = Recoveries(self, self.instances, describe_run=lambda run_id: self.runs.get(run_id))
        self.runs = Runs(self, library=self.library, instances=self.instances, offers=self.offers,
                         recovery=self.recovery, notify=self.notify)
        self.sessions = Sessions(self, self.instances, self.loop)  # remote ComfyUI on a rented GPU
        # workflow templates by name, and LoRA tests (on this home's remote ComfyUI when one runs)
        self.templates = Templates(self, remote_comfy_url=lambda: self.sessions.comfy_url())
        self.captions = Captions(self)  # caption edits over generations (the sidebar's editor)
        self.uploads = Uploads(self, self.library)  # the sidebar's staged uploads and preparation reviews
        self.train_config = TrainConfigs(self, self.library)  # the config editor: presets, checks, estimates
        self.outputs = RunOutputs(self, self.runs)  # a run's log, samples and spend so far
        self.doctor = Doctor(self)  # every setting and credential against the real services
        self.models = ModelsCache(self)  # base weights into the bucket's models/

    @classmethod
    def open(cls, home: str | Path | None = None, *, fall_back: bool = True, **kwargs: Any) -> "App":
        """The app for ``home`` (default: ``LORA_CLOUD_HOME`` or the per-user folder), with settings
        that follow the files. Reads the settings once. A damaged settings file gives way to its
        last good copy (the problem is reported by every guard pass); with ``fall_back=False``
        it fails here, clearly (a command that does not guard)."""
        source = SettingsSource(home, fall_back=fall_back)
        source.current()
        return cls(source, **kwargs)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Send a live event (service/events.py names) to the sink, and let the notifier see it."""
        self.sink(event, data)
        self.notify.observe(event, data)

    # ---- the parts ---------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.source.current()

    @property
    def settings_problem(self) -> str | None:
        return self.source.problem

    @property
    def storage(self) -> Storage:
        """The configured storage; rebuilt when the storage settings change (may block the first
        time: a GCS client looks up credentials)."""
        if self._fixed_storage is not None:
            return self._fixed_storage
        settings = self.settings
        key = (settings.storage_url, settings.gcs_project, settings.secret("gcs_service_account_json"))
        with self._lock:
            if self._storage is None or self._storage[0] != key:
                from ..storage import open_storage

                self._storage = (key, open_storage(settings=settings))
            return self._storage[1]

    @property
    def state(self) -> StateStore:
        """The state store; a damaged one (at open, or met since) is set aside and a new one
        started (:meth:`StateStore.open`), which the next guard pass rebuilds."""
        def stale(store: StateStore | None) -> bool:
            return store is None or store.stands_for != self.settings.state_db or store.damage is not None

        if stale(self._state):
            with self._lock:
                if stale(self._state):
                    self._state = StateStore.open(self.settings.state_db, clock=self.clock)
        return self._state

    @property
    def loras_dir(self) -> Path:
        """The one rule for where a downloaded LoRA goes and where it is looked for, so what Await
        LoRA puts on disk the sidebar and ``lora download`` find: the pack's folder
        (``lora_cloud/``) under the ``comfyui_loras_dir`` setting (``<ComfyUI>/models/loras``);
        else the folder the app was built with (inside ComfyUI: its own ``models/loras/lora_cloud``);
        else the same folder of the ComfyUI this package is installed in (the CLI beside the
        nodes); else ``<home>/loras``."""
        from .doctor import find_comfyui
        from .library import comfy_lora_folder

        settings = self.settings
        if settings.comfyui_loras_dir:
            configured = Path(settings.comfyui_loras_dir).expanduser()
            # older versions took the setting as the download folder itself: one that already names
            # the pack's folder is kept as it is, never nested (lora_cloud/lora_cloud/)
            return configured if configured.name == comfy_lora_folder(".").name else comfy_lora_folder(configured)
        if self._loras_dir:
            return self._loras_dir
        comfyui = find_comfyui()
        return comfy_lora_folder(comfyui / "models" / "loras") if comfyui else settings.home / "loras"

    @property
    def work_dir(self) -> Path:
        """Intermediate folders of the graph's dataset steps."""
        return self.settings.home / "work"

    def provider(self, name: str = "vast", *, vram_gb: float = 24.0) -> ProviderFactory:
        """Opens the named provider with the current settings (a fresh client per use)."""
        if name in self.providers:
            return self.providers[name]
        if name not in PROVIDERS:
            raise ConfigError(f"unknown provider {name!r}; choose {' or '.join(PROVIDERS)}")
        settings = self.settings
        if name == "vast":

            @contextlib.asynccontextmanager
            async def open_vast() -> AsyncIterator[Provider]:
                from ..providers.vast import VastProvider, client_from_settings

                async with client_from_settings(settings) as client:
                    yield VastProvider(client)

            return open_vast

        @contextlib.asynccontextmanager
        async def open_local() -> AsyncIterator[Provider]:
            from ..providers.local import LocalProvider

            yield LocalProvider(settings.home / "local-instances", vram_gb=vram_gb)

        return open_local

    def has_vast_key(self) -> bool:
        return "vast" in self.providers or bool(self.settings.secret("vast_api_key"))

    # ---- the guard ---------------------------------------------------------------------------
    async def guard_pass(self, *, grace_s: float = 120.0, fresh_s: float = 1800.0,
                         on_recovery_step: Callable[[str], None] | None = None) -> GuardReport:
        """One pass of the one guard (reconcile + preemption recovery + budget watchdog) for
        vast.ai: the same from ComfyUI's loop, ``lora-cloud instances reconcile`` and cron.
        ``on_recovery_step`` is called after each step of a run's move (tests crash there).

        Budgets are read from the current settings on every check, so a changed budget applies
        within one round; a settings file that cannot be read keeps the last good budgets and the
        pass reports it. Storage that cannot be opened (no credentials), or whose setting was lost
        with a damaged config.toml that never had a good copy, is a bucket that cannot vouch for
        any run: nothing is destroyed on that doubt, and the budgets still hold. A state store
        that was damaged is set aside when it is opened (:meth:`StateStore.open`) and rebuilt here
        before the pass judges anything (:mod:`.store_rebuild`); the pass reports it.
        """
        import asyncio

        from ..errors import LoraCloudError, StorageError
        from ..storage.base import UnavailableStorage
        from .money import Budgets
        from .guard import Guard

        settings = await asyncio.to_thread(lambda: self.settings)
        if self.source.storage_unknown:
            storage = UnavailableStorage(settings.storage_url, StorageError(self.source.storage_unknown))
        else:
            try:
                storage = await asyncio.to_thread(lambda: self.storage)
            except LoraCloudError as exc:
                storage = UnavailableStorage(settings.storage_url, StorageError(exc.message))
        state = await asyncio.to_thread(lambda: self.state)
        async with self.provider("vast")() as provider:
            notes = await self._rebuild_state(state, storage, provider)
            guard = Guard(provider, state, lambda: Budgets.from_settings(self.settings), storage=storage,
                          clock=self.clock, emit=self.emit, grace_s=grace_s, fresh_s=fresh_s,
                          memory=self.guard_memory,
                          recovery=self.recovery.guard(provider, storage, on_step=on_recovery_step))
            return await guard.run_once(settings_problem=self.settings_problem, notes=notes)

    async def _rebuild_state(self, state: StateStore, storage: Storage, provider: Provider) -> list[tuple[str, str, str]]:
        """A store started in place of a damaged one is refilled from the provider's listing and
        the bucket before the pass judges anything (:mod:`.store_rebuild`); the pass reports it.
        Without a listing the rebuild waits for a pass that has one."""
        import asyncio

        from ..errors import CorruptRecord, LoraCloudError
        from .money import kinds
        from .guard import provider_charges
        from .guard import rebuild

        try:
            if not await asyncio.to_thread(state.rebuild_due):
                return []
            instances = await provider.list()
            message = await rebuild(state, storage, instances, self.clock(), self.guard_memory.seen,
                                    charges=provider_charges(provider), max_dph=self.settings.max_dph)
        except (CorruptRecord, LoraCloudError):
            return []  # the pass meets the same problem and reports it
        return [(kinds.STATE_STORE, str(state.path), message)]
