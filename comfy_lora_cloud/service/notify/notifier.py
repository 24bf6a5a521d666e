"""The app's one notifier (``app.notify``): events in, notices out, once per channel, each channel
on its own line (:class:`~.worker.ChannelWorker`)."""

from __future__ import annotations

import atexit
import json
import logging
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...errors import LoraCloudError
from ..events import NOTIFY_EVENT
from . import desktop
from .ledger import DAMAGED, Entry, Ledger
from .notices import EVENTS, KINDS, Notice, clean_text, notices_for
from .views import NotifySummary
from .webhook import Resolver, WebhookPolicy, post_webhook, system_resolve
from .worker import ChannelWorker

if TYPE_CHECKING:
    from ..core import Core

log = logging.getLogger(__name__)

SETTING_KEYS = ("notify_toast", "notify_desktop", "notify_webhook", "webhook_format")
# the toast first: it is local (the state store and the sink), so a notice's toast never waits for
# anything that crosses a network
CHANNELS = ("toast", "desktop", "webhook")
QUEUE_SIZE = 256  # notices waiting per channel; beyond it a notice is dropped unclaimed (see observe)
IDLE_EXIT_S = 5.0  # a channel's thread ends after this long with nothing to do (restarted on demand)
EXIT_DRAIN_S = 10.0  # at interpreter exit, wait this long for deliveries in flight
HISTORY = 200
_STALE = ("stale", None)


@dataclass
class Delivery:
    channel: str
    notice: Notice
    outcome: str  # sent | skipped | failed | dropped (its channel's queue was full)
    detail: str = ""


class Notifier:
    """Events in, notices out, once per channel.

    ``run_command`` (subprocess.run's shape), ``webhook_policy``, ``webhook_transport`` (an httpx
    async transport), ``webhook_resolve`` (host, port -> addresses), ``sleep`` and ``rng`` (the
    backoff's jitter) are injectable for tests; ``platform`` picks the desktop command.
    ``history`` keeps the last deliveries of this process (newest last).
    """

    def __init__(self, core: Core, *, run_command: desktop.Runner = subprocess.run, platform: str = sys.platform,
                 webhook_policy: WebhookPolicy | None = None, webhook_transport: Any = None,
                 webhook_resolve: Resolver = system_resolve, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, idle_exit_s: float = IDLE_EXIT_S, queue_size: int = QUEUE_SIZE):
        self.core = core
        self.run_command = run_command
        self.platform = platform
        self.webhook_policy = webhook_policy or WebhookPolicy()
        self.webhook_transport = webhook_transport
        self.webhook_resolve = webhook_resolve
        self.sleep = sleep
        self.rng = rng
        self.history: list[Delivery] = []
        self.records = Ledger(lambda: core.state)
        self._history_lock = threading.Lock()
        self._atexit = threading.Lock()
        self._atexit_registered = False
        # events are read into notices on a line of their own (redacting a long error message is
        # CPU work, never for the caller's event loop); it only hands notices to the channels
        self._intake = ChannelWorker("intake", self._read_event, capacity=queue_size, idle_exit_s=idle_exit_s,
                                     on_start=self._register_atexit)
        self._workers = {
            channel: ChannelWorker(channel, self._handler(channel), capacity=queue_size, idle_exit_s=idle_exit_s,
                                   first=_STALE, on_start=self._register_atexit)
            for channel in CHANNELS
        }

    # ---- input -----------------------------------------------------------------------------
    def observe(self, event: str, data: Any) -> None:
        """An event the services emitted: queued, read into notices on the intake's thread, and
        each notice queued on every channel's own line. Never blocks and never raises, so it is
        safe on any event loop."""
        if event not in EVENTS:
            return
        try:
            snapshot = json.loads(json.dumps(data, default=str))  # the caller may change its dict later
        except (TypeError, ValueError):
            return
        if not self._intake.put((event, snapshot)):
            log.warning("lora_cloud notification: event %s not read: %d events already wait", event,
                        self._intake.waiting)

    def notice(self, kind: str, key: str, title: str, message: str, subject: Mapping[str, Any] | None = None,
               at: float | None = None) -> None:
        """Announce something no event carries (once per channel for ``key``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown notification kind {kind!r}; one of {', '.join(KINDS)}")
        self._dispatch(Notice(kind, key, clean_text(title, 200), clean_text(message),
                              at if at is not None else self.core.clock(), dict(subject or {})))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is delivered (or given up) on every channel; False
        on timeout."""
        deadline = time.monotonic() + timeout
        lines = [self._intake, *self._workers.values()]  # the intake first: it feeds the channels
        return all(w.wait_idle(deadline - time.monotonic()) for w in lines)

    def _read_event(self, item: tuple[str, Any]) -> None:
        event, data = item
        for n in notices_for(event, data, self.core.clock()):
            self._dispatch(n)

    def _dispatch(self, n: Notice) -> None:
        for channel, worker in self._workers.items():
            if not worker.put(("notice", n)):
                # not claimed, so nothing is lost for good: the same happening announced again
                # (a run's state is re-emitted by the poller) is delivered then
                log.warning("lora_cloud notification %s not queued on %s: %d notices already wait there",
                            n.key, channel, worker.waiting)
                self._remember(Delivery(channel, n, "dropped", "the channel's queue is full"))

    def _register_atexit(self) -> None:
        with self._atexit:
            if not self._atexit_registered:
                self._atexit_registered = True
                atexit.register(self.flush, EXIT_DRAIN_S)

    # ---- one channel's line ------------------------------------------------------------------
    def _handler(self, channel: str) -> Callable[[tuple[str, Any]], None]:
        def handle(item: tuple[str, Any]) -> None:
            kind, n = item
            try:
                settings = self.core.settings
                if not self._enabled(channel, settings):
                    return
                if kind == "stale":
                    for taken in self.records.take_over_stale(channel):
                        self._send(channel, taken, settings)
                elif self.records.claim(channel, n):
                    self._send(channel, n, settings)
            except LoraCloudError as exc:  # a damaged store, settings that do not load: one line
                log.warning("lora_cloud notification on %s not sent: %s", channel, exc.message)
        return handle

    def _enabled(self, channel: str, settings: Any) -> bool:
        if channel == "toast":
            return bool(settings.notify_toast)
        if channel == "desktop":
            return bool(settings.notify_desktop)
        return bool(settings.notify_webhook) and bool(settings.secret("webhook_url"))

    def _send(self, channel: str, n: Notice, settings: Any) -> None:
        try:
            outcome, detail = getattr(self, f"_send_{channel}")(n, settings)
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            outcome, detail = "failed", f"{type(exc).__name__}: {clean_text(exc, 200)}"
        self.records.finish(channel, n, outcome, detail)
        self._remember(Delivery(channel, n, outcome, detail))
        if outcome == "failed":
            log.warning("lora_cloud notification %s via %s failed: %s", n.kind, channel, detail)

    def _remember(self, delivery: Delivery) -> None:
        with self._history_lock:
            self.history.append(delivery)
            del self.history[:-HISTORY]

    def _send_toast(self, n: Notice, settings: Any) -> tuple[str, str]:
        self.core.sink(NOTIFY_EVENT, {"id": n.id, "kind": n.kind, "title": n.title, "message": n.message,
                                     "severity": n.severity, "subject": n.subject})
        return "sent", ""

    def _send_desktop(self, n: Notice, settings: Any) -> tuple[str, str]:
        return desktop.show(n.title, n.message, run_command=self.run_command, platform=self.platform)

    def _send_webhook(self, n: Notice, settings: Any) -> tuple[str, str]:
        ok, detail = post_webhook(settings.secret("webhook_url"), n, fmt=settings.webhook_format,
                                  secret=settings.secret("webhook_secret"), policy=self.webhook_policy,
                                  sleep=self.sleep, transport=self.webhook_transport,
                                  allow_private=settings.webhook_allow_private, resolve=self.webhook_resolve,
                                  rng=self.rng)
        return ("sent" if ok else "failed"), detail

    # ---- settings, for the sidebar ---------------------------------------------------------------
    def summary(self, recent: int = 10) -> NotifySummary:
        """The channels as set now, whether a webhook is configured and signed (never its URL or
        secret), the latest deliveries and how many ledger rows are damaged. Blocks (reads the
        state store): call it in a thread."""
        s = self.core.settings
        entries = self.records.entries()
        return NotifySummary(toast=s.notify_toast, desktop=s.notify_desktop, webhook=s.notify_webhook,
                             webhook_format=s.webhook_format, webhook_configured=bool(s.secret("webhook_url")),
                             webhook_signed=bool(s.secret("webhook_secret")),
                             desktop_here=desktop.desktop_command("t", "m", platform=self.platform) is not None,
                             recent=tuple(entries[:recent]),
                             damaged=tuple([e for e in entries if e.state == DAMAGED][:recent]))

    def set_channels(self, changes: Mapping[str, Any]) -> NotifySummary:
        """Turn channels on or off (``notify_toast``, ``notify_desktop``, ``notify_webhook``: true or
        false) or pick ``webhook_format``; written to config.toml, all checked before any is.
        ``webhook_allow_private`` is not among them: letting the webhook reach this machine's
        network is for the person at its shell (``lora-cloud config set``), not for a page.
        Returns the summary as it is after the change."""
        from ...errors import ConfigError
        from ...settings import Settings, set_value

        if not isinstance(changes, Mapping) or not changes:
            raise ConfigError(f"give at least one of {', '.join(SETTING_KEYS)}")
        clean: dict[str, str] = {}
        for key, value in changes.items():
            if key not in SETTING_KEYS:
                raise ConfigError(f"unknown notification setting {key!r}; known: {', '.join(SETTING_KEYS)}")
            if key == "webhook_format":
                if value not in ("json", "slack", "discord"):
                    raise ConfigError("webhook_format must be json, slack or discord")
                clean[key] = value
            else:
                if not isinstance(value, bool):
                    raise ConfigError(f"{key} must be true or false")
                clean[key] = "true" if value else "false"
        home = self.core.settings.home
        Settings.load(home, **clean)  # validate them all before writing any
        for key, value in clean.items():
            set_value(home, key, value)
        self.core.source.invalidate()
        return self.summary()

    def test(self) -> str:
        """Send a test notification on every channel that is on; returns its key."""
        key = f"test:{time.time_ns()}"
        self.notice("test", key, "LoRA Cloud test notification",
                    "Notifications reach you here: run done or failed, preempted, budget at 80% and 100%, "
                    "an idle session stopped.")
        return key

    def ledger(self) -> tuple[Entry, ...]:
        """Every delivery recorded in the state store (newest first; damaged rows last, as
        ``state: damaged``), each an :class:`~.ledger.Entry` (``to_dict()``: its JSON): for
        ``lora-cloud`` and tests."""
        return tuple(self.records.entries())
