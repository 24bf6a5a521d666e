"""Notifications: the one home of "tell the user that something happened", on three channels.

The hooks, in one place. A notice has a kind, and a key that names the happening; each key is
delivered at most once per channel, also across restarts and across processes sharing a home
(ComfyUI and the CLI)::

    kind            when                                                   key
    run_done        a run's state becomes done                             run:<id>:done
    run_failed      a run ends failed, timed_out or lost                   run:<id>:failed
    run_preempted   the guard's recovery found the run's GPU taken back    run:<id>:preempted:<count>
    run_resumed     ... and the instance came back, or the run moved       run:<id>:resumed:<instance>
    budget_80       a budget reached 80% (monthly: once a month)           budget:<budget>:<subject>:80
    budget_100      a budget reached 100%, or the watchdog enforced it     budget:<budget>:<subject>:100
    session_idle    a remote ComfyUI session stopped for idleness          session:<id>:idle

Where notices come from: :meth:`Notifier.observe` sees every event the services emit
(:meth:`App.emit <comfy_lora_cloud.service.app.App.emit>`) and the ones the pack's poller sends
(``comfy/events.py``), and maps them; code that knows of a happening no event carries calls
:meth:`Notifier.notice` (a session stopped for idleness: ``app.notify.notice("session_idle",
f"session:{id}:idle", title, message)``, or emit :data:`SESSION_EVENT` with ``kind`` ``idle_stopped``).
A run that ended more than :data:`MAX_AGE_S` ago is not news (a first start must not announce
every old run).

Channels, each turned off by its setting:

- ``toast`` (``notify_toast``): the ``lora_cloud.notify`` event through the app's sink; in ComfyUI
  that is a websocket broadcast, and the sidebar shows it as a toast in every open tab;
- ``desktop`` (``notify_desktop``): the machine's own notifications: ``notify-send``, else a D-Bus
  ``Notify`` call through ``gdbus`` (Linux), ``osascript`` (macOS), a PowerShell toast (Windows);
  silently skipped where there is no desktop (no ``DISPLAY``/``WAYLAND_DISPLAY``/D-Bus session,
  no command). Text travels as argv or environment, never through a shell;
- ``webhook`` (``notify_webhook``, when the ``webhook_url`` secret is set): a POST of JSON in the
  stable schema :data:`SCHEMA` (or a Slack ``{"text"}`` / Discord ``{"content"}`` body with
  ``webhook_format``), signed with HMAC-SHA256 over ``"<timestamp>.<body>"`` with the
  ``webhook_secret`` in ``X-LoRA-Cloud-Signature: sha256=<hex>`` (and ``X-LoRA-Cloud-Timestamp``),
  retried with exponential backoff on connection errors, 408, 429 (``Retry-After`` honoured) and
  5xx. Nothing secret is in a body: titles and messages are built from names, states and
  numbers, and pass :func:`~comfy_lora_cloud.errors.redact`.

Exactly once: before a channel delivers a notice, the notice is claimed for that channel in the
state store (``kv`` row ``notify:<channel>:<key>``, an ``INSERT OR IGNORE``); the row then records
``sent``, ``skipped`` or ``failed``. A claim whose process died before finishing (``pending`` for
longer than :data:`STALE_CLAIM_S`) is delivered by the next notifier that starts: a webhook
receiver may see such a notice twice at most, with the same ``X-LoRA-Cloud-Delivery`` id to
drop it by.

Never on an event loop: :meth:`Notifier.observe` only queues; one worker thread (started on
demand, ending when idle) maps, claims and delivers.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..errors import LoraCloudError, redact
from .events import BUDGET_EVENT, PREEMPTION_EVENT, RUN_EVENT, SESSION_EVENT

log = logging.getLogger(__name__)

NOTIFY_EVENT = "lora_cloud.notify"  # the toast channel: {"id", "kind", "title", "message", "severity"}
SCHEMA = "lora-cloud.notification.v1"
KINDS = ("run_done", "run_failed", "run_preempted", "run_resumed", "budget_80", "budget_100", "session_idle", "test")
SEVERITY = {"run_done": "success", "run_failed": "error", "run_preempted": "warn", "run_resumed": "info",
            "budget_80": "warn", "budget_100": "error", "session_idle": "info", "test": "info"}
SETTING_KEYS = ("notify_toast", "notify_desktop", "notify_webhook", "webhook_format")
CHANNELS = ("toast", "desktop", "webhook")
MAX_AGE_S = 24 * 3600  # a run that ended longer ago than this is not news
STALE_CLAIM_S = 600.0  # a claim left pending this long: its process died; deliver it again
IDLE_EXIT_S = 5.0  # the worker ends after this long with nothing to do (restarted on demand)
EXIT_DRAIN_S = 10.0  # at interpreter exit, wait this long for deliveries in flight
KV_PREFIX = "notify:"
FAILED_STATES = ("failed", "timed_out", "lost")
USER_AGENT = "comfy-lora-cloud-notify/1"
SIGNATURE_HEADER = "X-LoRA-Cloud-Signature"
TIMESTAMP_HEADER = "X-LoRA-Cloud-Timestamp"
DELIVERY_HEADER = "X-LoRA-Cloud-Delivery"
EVENT_HEADER = "X-LoRA-Cloud-Event"
MAX_TEXT = 1500  # Discord takes 2000 characters; titles and messages are short anyway


@dataclass(frozen=True)
class Notice:
    """One thing worth telling. ``key`` names the happening (see the module's table)."""

    kind: str
    key: str
    title: str
    message: str
    at: float
    subject: dict[str, Any] = field(default_factory=dict)  # ids and numbers only: run_id, dataset...

    @property
    def id(self) -> str:
        """A stable delivery id for the key (what a receiver drops a second delivery by)."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:32]

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "info")

    def to_dict(self) -> dict[str, Any]:
        """The webhook's stable JSON schema (``SCHEMA``)."""
        return {
            "schema": SCHEMA, "id": self.id, "key": self.key, "kind": self.kind, "severity": self.severity,
            "title": self.title, "message": self.message, "at": self.at,
            "time": datetime.fromtimestamp(self.at, timezone.utc).isoformat().replace("+00:00", "Z"),
            "subject": dict(self.subject),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Notice":
        return cls(kind=str(d["kind"]), key=str(d["key"]), title=str(d["title"]), message=str(d["message"]),
                   at=float(d["at"]), subject=dict(d.get("subject") or {}))


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    return redact(str(value))[:limit]


# ---- from events to notices ------------------------------------------------------------------
def _money(usd: Any) -> str:
    return f"${usd:.2f}" if isinstance(usd, (int, float)) and not isinstance(usd, bool) else ""


def notices_for(event: str, data: Mapping[str, Any], now: float) -> list[Notice]:
    """The notices an event means (mostly none). Pure: the tests feed it events directly."""
    if not isinstance(data, Mapping):
        return []
    if event == RUN_EVENT:
        return _run_notices(data, now)
    if event == BUDGET_EVENT:
        return _budget_notices(data, now)
    if event == PREEMPTION_EVENT:
        return _preemption_notices(data, now)
    if event == SESSION_EVENT and data.get("kind") in ("idle_stopped", "stopped_idle", "idle"):
        sid = _text(data.get("id") or data.get("session_id") or "?", 100)
        return [Notice("session_idle", f"session:{sid}:idle", "Session stopped for idleness",
                       _text(data.get("message") or f"Remote ComfyUI session {sid} was idle and has been stopped; "
                                                   "nothing bills for it any more."), now, {"session_id": sid})]
    return []


def _run_notices(run: Mapping[str, Any], now: float) -> list[Notice]:
    run_id = run.get("id") or run.get("run_id")
    state = run.get("state")
    if not isinstance(run_id, str) or not isinstance(state, str):
        return []
    name = _text(run.get("lora_name") or run_id, 120)
    subject = {k: run.get(k) for k in ("dataset", "lora_name", "gpu", "cost_usd", "step", "total_steps")
               if isinstance(run.get(k), (str, int, float)) and not isinstance(run.get(k), bool)}
    subject["run_id"] = run_id
    subject["state"] = state
    at = run.get("updated_at") or run.get("created_at")
    at = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None
    cost = _money(run.get("cost_usd"))
    if state == "done" or state in FAILED_STATES:
        if at is None or now - at > MAX_AGE_S:
            return []  # old news (or undated): never announced on a first start
        if state == "done":
            return [Notice("run_done", f"run:{run_id}:done", f"LoRA ready: {name}",
                           f"Run {run_id} finished" + (f" for {cost}" if cost else "") + ".", at, subject)]
        why = _text(run.get("error") or run.get("message") or state.replace("_", " "), 400)
        return [Notice("run_failed", f"run:{run_id}:failed", f"Run failed: {name}",
                       f"Run {run_id} ended {state.replace('_', ' ')}: {why}", at, subject)]
    return []


def _preemption_notices(data: Mapping[str, Any], now: float) -> list[Notice]:
    """What the guard's recovery (service/recovery.py) announces: ``preempted``, then ``resumed``
    (the instance came back) or ``relaunched`` (moved to another); ``gave_up`` ends the run, which
    its run event announces as failed."""
    run_id = data.get("run_id")
    kind = data.get("kind")
    if not isinstance(run_id, str) or kind not in ("preempted", "resumed", "relaunched"):
        return []
    subject = {k: data.get(k) for k in ("run_id", "instance_id", "step", "checkpoint_step", "preemptions", "attempt",
                                         "gpu", "dph", "waited_s") if isinstance(data.get(k), (str, int, float))
               and not isinstance(data.get(k), bool)}
    message = _text(data.get("message") or kind, 400)
    if kind == "preempted":
        count = data.get("preemptions") if isinstance(data.get("preemptions"), int) else 1
        return [Notice("run_preempted", f"run:{run_id}:preempted:{count}", f"Run preempted: {run_id}",
                       f"The GPU of run {run_id} was taken back; {message}", now, subject)]
    instance = _text(data.get("instance_id") or data.get("attempt") or "?", 60)
    how = "resumed on its instance" if kind == "resumed" else "moved to a new instance"
    return [Notice("run_resumed", f"run:{run_id}:resumed:{instance}", f"Run resumed: {run_id}",
                   f"Run {run_id} {how}: {message}", now, subject)]


def _budget_notices(data: Mapping[str, Any], now: float) -> list[Notice]:
    kind = data.get("kind")
    if kind not in ("warning", "exceeded", "enforced"):
        return []
    level = "80" if kind == "warning" else "100"
    budget = data.get("budget") or "max_month_usd"
    if budget == "max_month_usd" and not data.get("instance_id"):
        subject = datetime.fromtimestamp(now).strftime("%Y-%m")  # the monthly budget: once a month
    else:  # a per-instance or per-run limit: once per instance (or run)
        subject = str(data.get("run_id") or data.get("instance_id") or "?")[:100]
    title = "Budget at 80%" if level == "80" else ("Budget reached: instance destroyed" if kind == "enforced"
                                                    else "Budget reached")
    message = _text(data.get("message") or f"{budget} reached {level}%", 400)
    info = {k: data.get(k) for k in ("budget", "instance_id", "run_id", "value", "limit", "month_usd", "max_month_usd")
            if isinstance(data.get(k), (str, int, float)) and not isinstance(data.get(k), bool)}
    return [Notice(f"budget_{level}", f"budget:{budget}:{subject}:{level}", title, message, now, info)]


# ---- channels --------------------------------------------------------------------------------
Runner = Callable[..., Any]  # subprocess.run's shape


def _gvariant_string(text: str) -> str:
    """``text`` as a GVariant text-format string literal (what ``gdbus call`` parses)."""
    out = []
    for ch in text:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(" ")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


WINDOWS_TOAST = (
    "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, ContentType = WindowsRuntime]"
    " > $null; $x = [Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent("
    "[Windows.UI.Notifications.ToastTemplateType]::ToastText02); $t = $x.GetElementsByTagName('text'); "
    "$t.Item(0).AppendChild($x.CreateTextNode($env:LORA_CLOUD_NOTIFY_TITLE)) > $null; "
    "$t.Item(1).AppendChild($x.CreateTextNode($env:LORA_CLOUD_NOTIFY_MESSAGE)) > $null; "
    "[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier("
    "'{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\\WindowsPowerShell\\v1.0\\powershell.exe')"
    ".Show([Windows.UI.Notifications.ToastNotification]::new($x))"
)


def desktop_command(title: str, message: str, *, platform: str = sys.platform,
                    env: Mapping[str, str] | None = None,
                    which: Callable[[str], str | None] = shutil.which) -> tuple[list[str], dict[str, str]] | None:
    """The command (argv, extra environment) that shows a desktop notification here, or None
    when this machine has no desktop to show one on."""
    env = os.environ if env is None else env
    if platform == "darwin":
        exe = which("osascript")
        if not exe:
            return None
        return [exe, "-e", "on run argv", "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
                "-e", "end run", title, message], {}
    if platform == "win32":
        exe = which("powershell") or which("pwsh")
        if not exe:
            return None
        return [exe, "-NoProfile", "-NonInteractive", "-Command", WINDOWS_TOAST], {
            "LORA_CLOUD_NOTIFY_TITLE": title, "LORA_CLOUD_NOTIFY_MESSAGE": message}
    # Linux and the BSDs: the freedesktop notification service on the session bus
    if not (env.get("DBUS_SESSION_BUS_ADDRESS") or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return None  # a server, a container, an SSH session: no desktop
    exe = which("notify-send")
    if exe:
        return [exe, "--app-name=LoRA Cloud", "--", title, message], {}
    exe = which("gdbus")
    if exe and env.get("DBUS_SESSION_BUS_ADDRESS"):
        return [exe, "call", "--session", "--dest", "org.freedesktop.Notifications",
                "--object-path", "/org/freedesktop/Notifications",
                "--method", "org.freedesktop.Notifications.Notify",
                "'LoRA Cloud'", "uint32 0", "''", _gvariant_string(title), _gvariant_string(message),
                "@as []", "@a{sv} {}", "int32 10000"], {}
    return None


def webhook_body(notice: Notice, fmt: str) -> bytes:
    """The body for ``webhook_format``: the stable schema, or what Slack / Discord expect."""
    if fmt == "slack":
        payload: dict[str, Any] = {"text": f"*{notice.title}*\n{notice.message}"}
    elif fmt == "discord":
        payload = {"content": f"**{notice.title}**\n{notice.message}"[:2000], "username": "LoRA Cloud"}
    else:
        payload = notice.to_dict()
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``"<timestamp>." + body``): what a receiver checks."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass
class WebhookPolicy:
    attempts: int = 5
    base_delay_s: float = 2.0
    max_delay_s: float = 60.0
    timeout_s: float = 10.0


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), cap)
    except ValueError:
        return None


def post_webhook(url: str, notice: Notice, *, fmt: str = "json", secret: str | None = None,
                 policy: WebhookPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 transport: Any = None, clock: Callable[[], float] = time.time) -> tuple[bool, str]:
    """POST the notice, retrying with backoff; ``(delivered, what happened)``. Blocks: call it
    from the notifier's worker thread, never from an event loop."""
    import httpx

    policy = policy or WebhookPolicy()
    body = webhook_body(notice, fmt)
    last = "not tried"
    with httpx.Client(timeout=policy.timeout_s, follow_redirects=False, transport=transport) as client:
        for attempt in range(policy.attempts):
            timestamp = str(int(clock()))
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, DELIVERY_HEADER: notice.id,
                       EVENT_HEADER: notice.kind, TIMESTAMP_HEADER: timestamp}
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
            delay = min(policy.base_delay_s * 2 ** attempt, policy.max_delay_s)
            try:
                resp = client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                last = f"attempt {attempt + 1}: {type(exc).__name__}"
            else:
                if 200 <= resp.status_code < 300:
                    return True, f"HTTP {resp.status_code} after {attempt + 1} attempt(s)"
                last = f"attempt {attempt + 1}: HTTP {resp.status_code}"
                if resp.status_code not in (408, 429) and resp.status_code < 500:
                    return False, last  # the receiver refuses it: asking again changes nothing
                delay = _retry_after(resp.headers.get("Retry-After"), policy.max_delay_s) or delay
            if attempt + 1 < policy.attempts:
                sleep(delay)
    return False, last


# ---- the notifier ----------------------------------------------------------------------------
@dataclass
class Delivery:
    channel: str
    notice: Notice
    outcome: str  # sent | skipped | failed
    detail: str = ""


class Notifier:
    """The app's one notifier (``app.notify``): events in, notices out, once per channel.

    ``run_command`` (subprocess.run's shape), ``webhook_policy``, ``webhook_transport`` (an httpx
    transport) and ``sleep`` are injectable for tests; ``platform`` picks the desktop command.
    ``history`` keeps the last deliveries of this process (newest last).
    """

    def __init__(self, app: Any, *, run_command: Runner = subprocess.run, platform: str = sys.platform,
                 webhook_policy: WebhookPolicy | None = None, webhook_transport: Any = None,
                 sleep: Callable[[float], None] = time.sleep, idle_exit_s: float = IDLE_EXIT_S):
        self.app = app
        self.run_command = run_command
        self.platform = platform
        self.webhook_policy = webhook_policy or WebhookPolicy()
        self.webhook_transport = webhook_transport
        self.sleep = sleep
        self.idle_exit_s = idle_exit_s
        self.history: list[Delivery] = []
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._unfinished = 0
        self._idle = threading.Condition(self._lock)
        self._resumed_stale = False
        self._atexit = False

    # ---- input -----------------------------------------------------------------------------
    def observe(self, event: str, data: Any) -> None:
        """An event the services emitted: queued, mapped and delivered on the worker. Cheap and
        non-blocking, so it is safe on any event loop; never raises."""
        if event not in (RUN_EVENT, BUDGET_EVENT, PREEMPTION_EVENT, SESSION_EVENT):
            return
        try:
            snapshot = json.loads(json.dumps(data, default=str))  # the caller may change its dict later
        except (TypeError, ValueError):
            return
        self._put(("event", (event, snapshot)))

    def notice(self, kind: str, key: str, title: str, message: str, subject: Mapping[str, Any] | None = None,
               at: float | None = None) -> None:
        """Announce something no event carries (once per channel for ``key``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown notification kind {kind!r}; one of {', '.join(KINDS)}")
        n = Notice(kind, key, _text(title, 200), _text(message), at if at is not None else self.app.clock(),
                   dict(subject or {}))
        self._put(("notice", n))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is delivered (or given up); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._unfinished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # ---- the worker --------------------------------------------------------------------------
    def _put(self, item: tuple[str, Any]) -> None:
        with self._lock:
            self._unfinished += 1
            self._queue.put(item)
            if self._thread is None or not self._thread.is_alive():
                if not self._resumed_stale:
                    self._resumed_stale = True
                    self._unfinished += 1
                    self._queue.put(("stale", None))
                self._thread = threading.Thread(target=self._work, name="lora-cloud-notify", daemon=True)
                self._thread.start()
                if not self._atexit:
                    self._atexit = True
                    atexit.register(self.flush, EXIT_DRAIN_S)

    def _work(self) -> None:
        while True:
            try:
                kind, item = self._queue.get(timeout=self.idle_exit_s)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                if kind == "event":
                    for n in notices_for(item[0], item[1], self.app.clock()):
                        self._deliver(n)
                elif kind == "notice":
                    self._deliver(item)
                elif kind == "stale":
                    self._deliver_stale()
            except LoraCloudError as exc:  # a damaged store, a bucket that does not answer: one line
                log.warning("lora_cloud notification not sent: %s", exc.message)
            except Exception:  # a notification must never take anything else down
                log.warning("lora_cloud notification failed", exc_info=True)
            finally:
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()

    def _deliver(self, n: Notice) -> None:
        settings = self.app.settings
        for channel in CHANNELS:
            if not self._enabled(channel, settings):
                continue
            if self._claim(channel, n):
                self._send(channel, n, settings)

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
            outcome, detail = "failed", f"{type(exc).__name__}: {_text(exc, 200)}"
        self._finish(channel, n, outcome, detail)
        if outcome == "failed":
            log.warning("lora_cloud notification %s via %s failed: %s", n.kind, channel, detail)

    def _send_toast(self, n: Notice, settings: Any) -> tuple[str, str]:
        self.app.sink(NOTIFY_EVENT, {"id": n.id, "kind": n.kind, "title": n.title, "message": n.message,
                                     "severity": n.severity, "subject": n.subject})
        return "sent", ""

    def _send_desktop(self, n: Notice, settings: Any) -> tuple[str, str]:
        found = desktop_command(n.title, n.message, platform=self.platform)
        if found is None:
            return "skipped", "no desktop here"
        argv, extra = found
        env = {**os.environ, **extra}
        proc = self.run_command(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, timeout=15, check=False)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else str(proc.stderr or "")
            return "failed", f"{os.path.basename(argv[0])} exited {proc.returncode}: {_text(err, 200)}"
        return "sent", os.path.basename(argv[0])

    def _send_webhook(self, n: Notice, settings: Any) -> tuple[str, str]:
        ok, detail = post_webhook(settings.secret("webhook_url"), n, fmt=settings.webhook_format,
                                  secret=settings.secret("webhook_secret"), policy=self.webhook_policy,
                                  sleep=self.sleep, transport=self.webhook_transport)
        return ("sent" if ok else "failed"), detail

    # ---- settings, for the sidebar ---------------------------------------------------------------
    def summary(self, recent: int = 10) -> dict[str, Any]:
        """The channels as set now, whether a webhook is configured and signed (never its URL or
        secret), and the latest deliveries. Blocks (reads the state store): call it in a thread."""
        s = self.app.settings
        return {"toast": s.notify_toast, "desktop": s.notify_desktop, "webhook": s.notify_webhook,
                "webhook_format": s.webhook_format, "webhook_configured": bool(s.secret("webhook_url")),
                "webhook_signed": bool(s.secret("webhook_secret")),
                "desktop_here": desktop_command("t", "m", platform=self.platform) is not None,
                "recent": self.ledger()[:recent]}

    def set_channels(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Turn channels on or off (``notify_toast``, ``notify_desktop``, ``notify_webhook``: true or
        false) or pick ``webhook_format``; written to config.toml, all checked before any is."""
        from ..errors import ConfigError
        from ..settings import Settings, set_value

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
        home = self.app.settings.home
        Settings.load(home, **clean)  # validate them all before writing any
        for key, value in clean.items():
            set_value(home, key, value)
        self.app.source.invalidate()
        return self.summary()

    def test(self) -> str:
        """Send a test notification on every channel that is on; returns its key."""
        key = f"test:{time.time_ns()}"
        self.notice("test", key, "LoRA Cloud test notification",
                    "Notifications reach you here: run done or failed, preempted, budget at 80% and 100%, "
                    "an idle session stopped.")
        return key

    # ---- the ledger (state store, kv rows) ------------------------------------------------------
    @staticmethod
    def _kv_key(channel: str, n: Notice) -> str:
        return f"{KV_PREFIX}{channel}:{n.key}"

    def _claim(self, channel: str, n: Notice) -> bool:
        """True when this process won the right to deliver ``n`` on ``channel`` (first claim)."""
        record = {"state": "pending", "at": time.time(), "owner": f"{socket.gethostname()}:{os.getpid()}",
                  "notice": asdict(n)}
        with self.app.state.transaction() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO kv (key, value) VALUES (?, ?)",
                               (self._kv_key(channel, n), json.dumps(record)))
            return cur.rowcount == 1

    def _finish(self, channel: str, n: Notice, outcome: str, detail: str) -> None:
        record = {"state": outcome, "at": time.time(), "detail": detail, "notice": asdict(n)}
        self.app.state.set_kv(self._kv_key(channel, n), json.dumps(record))
        self.history.append(Delivery(channel, n, outcome, detail))
        del self.history[:-200]

    def _deliver_stale(self) -> None:
        """Deliver claims a dead process left pending (see the module docstring)."""
        now = time.time()
        with self.app.state.connect() as conn:
            rows = conn.execute("SELECT key, value FROM kv WHERE key LIKE ?", (KV_PREFIX + "%",)).fetchall()
        settings = self.app.settings
        for key, value in rows:
            try:
                record = json.loads(value)
                if record.get("state") != "pending" or now - float(record.get("at", now)) < STALE_CLAIM_S:
                    continue
                channel = key[len(KV_PREFIX):].split(":", 1)[0]
                n = Notice.from_dict(record["notice"])
            except (ValueError, KeyError, TypeError):
                continue
            if channel not in CHANNELS or not self._enabled(channel, settings):
                continue
            with self.app.state.transaction() as conn:  # take it over, unless someone else just did
                cur = conn.execute("UPDATE kv SET value = ? WHERE key = ? AND value = ?",
                                   (json.dumps({**record, "at": now, "owner": f"{socket.gethostname()}:{os.getpid()}"}),
                                    key, value))
                if cur.rowcount != 1:
                    continue
            self._send(channel, n, settings)

    def ledger(self) -> list[dict[str, Any]]:
        """Every delivery recorded in the state store (newest first): for ``lora-cloud`` and tests."""
        with self.app.state.connect() as conn:
            rows = conn.execute("SELECT key, value FROM kv WHERE key LIKE ?", (KV_PREFIX + "%",)).fetchall()
        out = []
        for key, value in rows:
            try:
                record = json.loads(value)
            except ValueError:
                continue
            channel = key[len(KV_PREFIX):].split(":", 1)[0]
            out.append({"channel": channel, "key": key[len(KV_PREFIX) + len(channel) + 1:],
                        "state": record.get("state"), "at": record.get("at"), "detail": record.get("detail", "")})
        return sorted(out, key=lambda r: r.get("at") or 0, reverse=True)


__all__ = ["CHANNELS", "KINDS", "NOTIFY_EVENT", "SCHEMA", "SESSION_EVENT", "Notice", "Notifier", "WebhookPolicy",
           "desktop_command", "notices_for", "post_webhook", "sign", "webhook_body"]
