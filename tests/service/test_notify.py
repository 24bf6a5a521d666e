"""Notifications (service/notify.py) against real receivers: a local HTTP server for the webhook
(body, signature, retries, once across restarts and processes), a stubbed ``notify-send`` and a
real D-Bus session bus for the desktop, the app's sink for the toast."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.prerequisites import missing
from aiohttp import web

from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.events import BUDGET_EVENT, PREEMPTION_EVENT, RUN_EVENT
from comfy_lora_cloud.service.notify import (NOTIFY_EVENT, SCHEMA, SESSION_EVENT, STALE_CLAIM_S, Notice,
                                             WebhookPolicy, desktop_command, notices_for)
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage

SECRET = "whsec-0123456789abcdefXYZ"
VAST_KEY = "vastkey-notify-0123456789"
FAST = WebhookPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05, timeout_s=10)
WAIT_S = 30  # an upper bound for a slow shared CPU, not a timing assertion


class Receiver:
    """A webhook endpoint that answers from a script (503, 429, 200...) and keeps every request."""

    def __init__(self, script=()):
        self.script = list(script)
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status = self.script.pop(0) if self.script else 200
        headers = {"Retry-After": "0"} if status == 429 else {}
        return web.Response(status=status, text="ok" if status == 200 else "no", headers=headers)


@pytest.fixture
async def receiver(aiohttp_server):
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    server = await aiohttp_server(app)
    rx.url = str(server.make_url("/hook"))
    return rx


def make_app(home: Path, tmp_path: Path, *, sink=None, **settings) -> App:
    home.mkdir(parents=True, exist_ok=True)
    secrets = {"vast_api_key": VAST_KEY, **{k: v for k, v in settings.items() if k in ("webhook_url", "webhook_secret")}}
    (home / "secrets.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in secrets.items()))
    (home / "secrets.toml").chmod(0o600)
    # the receivers here listen on 127.0.0.1: a webhook there needs the explicit allowance
    plain = {"webhook_allow_private": True, **{k: v for k, v in settings.items() if k not in secrets}}
    app = App(Settings.load(home, **plain), storage=LocalStorage(tmp_path / "bucket"), emit=sink)
    app.notify.webhook_policy = FAST
    return app


def done_run(run_id: str = "run-1", **extra) -> dict:
    return {"id": run_id, "state": "done", "lora_name": "cat-v1", "dataset": "cats", "cost_usd": 1.25,
            "updated_at": time.time(), "live": False, **extra}


async def flush(app: App) -> None:
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)


async def test_webhook_body_signature_retries_and_once_across_restart(receiver, tmp_path, clean_env):
    receiver.script = [503, 429]  # two failures, then 200
    app = make_app(clean_env, tmp_path, webhook_url=receiver.url, webhook_secret=SECRET, notify_toast=False)
    app.emit(RUN_EVENT, done_run())  # observe() only queues: nothing has reached the receiver yet
    assert receiver.requests == []
    await flush(app)

    assert len(receiver.requests) == 3  # retried twice with backoff, delivered on the third
    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1
    headers, body = receiver.requests[-1]
    data = json.loads(body)
    assert data["schema"] == SCHEMA and data["kind"] == "run_done" and data["key"] == "run:run-1:done"
    assert data["title"] == "LoRA ready: cat-v1" and "$1.25" in data["message"]
    assert data["subject"]["run_id"] == "run-1" and data["subject"]["dataset"] == "cats"
    assert data["time"].endswith("Z") and data["severity"] == "success"
    assert {h["X-LoRA-Cloud-Delivery"] for h, _ in receiver.requests} == {data["id"]}
    assert headers["Content-Type"] == "application/json" and headers["X-LoRA-Cloud-Event"] == "run_done"
    # the receiver checks the signature over "<timestamp>.<body>" with the shared secret
    ts = headers["X-LoRA-Cloud-Timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-LoRA-Cloud-Signature"], expected)
    forged = hmac.new(b"other", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-LoRA-Cloud-Signature"] != "sha256=" + forged
    # nothing secret travels: not the signing secret, not the vast key, not the URL
    for h, b in receiver.requests:
        blob = b.decode() + json.dumps(h)
        assert SECRET not in blob and VAST_KEY not in blob and "/hook" not in b.decode()

    # the same event again in this process, and after a restart (a new app on the same home)
    app.emit(RUN_EVENT, done_run())
    await flush(app)
    restarted = make_app(clean_env, tmp_path, webhook_url=receiver.url, webhook_secret=SECRET, notify_toast=False)
    restarted.emit(RUN_EVENT, done_run())
    await flush(restarted)
    assert len(receiver.requests) == 3
    [entry] = [e for e in restarted.notify.ledger() if e.channel == "webhook"]
    assert entry.key == "run:run-1:done" and entry.state == "sent"


async def test_webhook_gives_up_and_never_repeats(receiver, tmp_path, clean_env):
    receiver.script = [500] * 10
    app = make_app(clean_env, tmp_path, webhook_url=receiver.url, notify_toast=False)
    app.emit(RUN_EVENT, done_run(state="failed", error="kohya exited 1"))
    await flush(app)
    assert len(receiver.requests) == FAST.attempts
    assert "X-LoRA-Cloud-Signature" not in receiver.requests[0][0]  # no secret set: unsigned
    body = json.loads(receiver.requests[0][1])
    assert body["kind"] == "run_failed" and "kohya exited 1" in body["message"]
    [entry] = app.notify.ledger()
    assert entry.state == "failed" and "HTTP 500" in entry.detail
    # a refusal (4xx) is not retried
    receiver.script = [400]
    app.notify.notice("session_idle", "session:s1:idle", "Session stopped for idleness", "s1 was idle")
    await flush(app)
    assert len(receiver.requests) == FAST.attempts + 1
    # a restart does not try the failed ones again
    restarted = make_app(clean_env, tmp_path, webhook_url=receiver.url, notify_toast=False)
    restarted.emit(RUN_EVENT, done_run(state="failed", error="kohya exited 1"))
    await flush(restarted)
    assert len(receiver.requests) == FAST.attempts + 1


async def test_a_claim_left_pending_by_a_dead_process_is_delivered_once(receiver, tmp_path, clean_env):
    app = make_app(clean_env, tmp_path, webhook_url=receiver.url, notify_toast=False)
    notice = Notice("run_done", "run:run-9:done", "LoRA ready: dog", "Run run-9 finished.", time.time(),
                    {"run_id": "run-9"})
    record = {"state": "pending", "at": time.time() - STALE_CLAIM_S - 5, "owner": "gone:1",
              "notice": notice.__dict__ | {"subject": {"run_id": "run-9"}}}
    app.state.set_kv("notify:webhook:run:run-9:done", json.dumps(record))
    fresh = dict(record, at=time.time())  # a claim another live process is delivering right now
    app.state.set_kv("notify:webhook:run:run-8:done", json.dumps(fresh | {"notice": dict(record["notice"],
                                                                                        key="run:run-8:done")}))
    restarted = make_app(clean_env, tmp_path, webhook_url=receiver.url, notify_toast=False)
    restarted.emit(RUN_EVENT, done_run("run-9"))  # starts the worker, which first finishes old claims
    await flush(restarted)
    keys = [json.loads(b)["key"] for _, b in receiver.requests]
    assert keys == ["run:run-9:done"]
    states = {e.key: e.state for e in restarted.notify.ledger()}
    assert states == {"run:run-9:done": "sent", "run:run-8:done": "pending"}


async def test_slack_and_discord_bodies(receiver, tmp_path, clean_env):
    for fmt, field in (("slack", "text"), ("discord", "content")):
        home = clean_env.parent / f"home-{fmt}"
        app = make_app(home, tmp_path / fmt, webhook_url=receiver.url, webhook_format=fmt, notify_toast=False)
        app.notify.notice("budget_80", f"budget:max_month_usd:{fmt}:80", "Budget at 80%", "$40.00 of $50.00")
        await flush(app)
        body = json.loads(receiver.requests[-1][1])
        assert "Budget at 80%" in body[field] and "$40.00 of $50.00" in body[field]
        assert "schema" not in body


async def test_toast_goes_to_the_sink_once_and_can_be_turned_off(tmp_path, clean_env):
    sent: list[tuple[str, dict]] = []
    app = make_app(clean_env, tmp_path, sink=lambda e, d: sent.append((e, d)))
    app.emit(RUN_EVENT, done_run())
    app.emit(RUN_EVENT, done_run())
    await flush(app)
    toasts = [d for e, d in sent if e == NOTIFY_EVENT]
    assert len(toasts) == 1 and toasts[0]["title"] == "LoRA ready: cat-v1" and toasts[0]["severity"] == "success"
    assert sent[0][0] == RUN_EVENT  # the event itself still reaches the sink
    off = make_app(clean_env.parent / "home-off", tmp_path / "off", sink=lambda e, d: sent.append((e, d)),
                   notify_toast=False)
    off.emit(RUN_EVENT, done_run("run-2"))
    await flush(off)
    assert len([d for e, d in sent if e == NOTIFY_EVENT]) == 1


def test_what_events_mean():
    now = time.time()
    assert notices_for(RUN_EVENT, done_run(updated_at=now - 3 * 86400), now) == []  # old news
    assert notices_for(RUN_EVENT, {"id": "r", "state": "training", "updated_at": now}, now) == []
    assert notices_for(RUN_EVENT, {"id": "r", "state": "stopped", "updated_at": now}, now) == []  # the user did it
    [lost] = notices_for(RUN_EVENT, {"id": "r", "state": "lost", "updated_at": now}, now)
    assert lost.kind == "run_failed" and lost.key == "run:r:failed"
    assert notices_for(RUN_EVENT, {"id": "r", "state": "preempted", "updated_at": now}, now) == []  # recovery's
    [pre] = notices_for(PREEMPTION_EVENT, {"kind": "preempted", "run_id": "r", "instance_id": "77", "preemptions": 1,
                                           "message": "preempted: instance 77 exited; resumes from step 200"}, now)
    [back] = notices_for(PREEMPTION_EVENT, {"kind": "resumed", "run_id": "r", "instance_id": "77", "message": "x"}, now)
    [moved] = notices_for(PREEMPTION_EVENT, {"kind": "relaunched", "run_id": "r", "instance_id": "78", "attempt": 2,
                                             "message": "run moved to instance 78"}, now)
    assert (pre.kind, pre.key) == ("run_preempted", "run:r:preempted:1") and "step 200" in pre.message
    assert (back.kind, back.key, moved.kind, moved.key) == ("run_resumed", "run:r:resumed:77", "run_resumed",
                                                            "run:r:resumed:78")
    assert "moved to a new instance" in moved.message
    assert notices_for(PREEMPTION_EVENT, {"kind": "gave_up", "run_id": "r"}, now) == []  # the run event says failed
    month = time.strftime("%Y-%m", time.localtime(now))
    [warn] = notices_for(BUDGET_EVENT, {"kind": "warning", "budget": "max_month_usd", "message": "80%"}, now)
    [over] = notices_for(BUDGET_EVENT, {"kind": "exceeded", "budget": "max_month_usd", "message": "100%"}, now)
    assert (warn.kind, warn.key) == ("budget_80", f"budget:max_month_usd:{month}:80")
    assert (over.kind, over.key) == ("budget_100", f"budget:max_month_usd:{month}:100")
    [enf] = notices_for(BUDGET_EVENT, {"kind": "enforced", "budget": "max_run_usd", "instance_id": "7",
                                       "run_id": "r", "message": "reached"}, now)
    assert enf.key == "budget:max_run_usd:r:100" and "destroyed" in enf.title
    assert notices_for(BUDGET_EVENT, {"kind": "changed"}, now) == []
    [idle] = notices_for(SESSION_EVENT, {"kind": "idle_stopped", "id": "s-1"}, now)
    assert idle.kind == "session_idle" and idle.key == "session:s-1:idle"


# ---- the desktop channel -------------------------------------------------------------------------
HOSTILE_TITLE = "cat's \"v1\" $(touch pwned) `id`"


def _stub(bin_dir: Path, name: str, log: Path, rc: int = 0) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\nsys.exit({rc})\n")
    script.chmod(0o755)


async def test_desktop_notify_send_gets_the_text_as_argv(tmp_path, clean_env, monkeypatch):
    log = tmp_path / "notify-send.log"
    _stub(tmp_path / "bin", "notify-send", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.chdir(tmp_path)
    app = make_app(clean_env, tmp_path, notify_desktop=True, notify_toast=False)
    app.emit(RUN_EVENT, done_run(lora_name=HOSTILE_TITLE))
    app.emit(RUN_EVENT, done_run(lora_name=HOSTILE_TITLE))
    await flush(app)
    [argv] = [json.loads(line) for line in log.read_text().splitlines()]
    assert argv == ["--app-name=LoRA Cloud", "--", f"LoRA ready: {HOSTILE_TITLE}", "Run run-1 finished for $1.25."]
    assert not (tmp_path / "pwned").exists()
    assert [(d.channel, d.outcome) for d in app.notify.history] == [("desktop", "sent")]


async def test_desktop_is_skipped_silently_without_a_desktop(tmp_path, clean_env, monkeypatch):
    log = tmp_path / "notify-send.log"
    _stub(tmp_path / "bin", "notify-send", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    app = make_app(clean_env, tmp_path, notify_desktop=True, notify_toast=False)
    app.emit(RUN_EVENT, done_run())
    await flush(app)
    assert not log.exists()
    assert [(d.channel, d.outcome) for d in app.notify.history] == [("desktop", "skipped")]


def test_desktop_commands_for_macos_and_windows_pass_text_out_of_band():
    which = lambda name: f"/usr/bin/{name}"  # noqa: E731
    argv, env = desktop_command("T 'x'", 'M "y" $(id)', platform="darwin", which=which)
    assert argv[0] == "/usr/bin/osascript" and argv[-2:] == ["T 'x'", 'M "y" $(id)'] and env == {}
    assert all("T 'x'" not in a for a in argv[:-2])  # the script itself never holds the text
    argv, env = desktop_command("T 'x'", 'M "y"', platform="win32", which=which)
    assert env == {"LORA_CLOUD_NOTIFY_TITLE": "T 'x'", "LORA_CLOUD_NOTIFY_MESSAGE": 'M "y"'}
    assert all("T 'x'" not in a for a in argv)
    assert desktop_command("t", "m", platform="darwin", which=lambda name: None) is None


@pytest.fixture
def session_bus(tmp_path):
    """A private D-Bus session bus, and a monitor that records every Notify call on it."""
    if not (shutil.which("dbus-daemon") and shutil.which("dbus-monitor") and shutil.which("gdbus")):
        missing("dbus-daemon, dbus-monitor and gdbus are needed (apt-get install dbus libglib2.0-bin)")
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                              stdout=subprocess.PIPE, text=True)
    address = daemon.stdout.readline().strip()
    log = (tmp_path / "monitor.log").open("w")
    monitor = subprocess.Popen(["dbus-monitor", "--address", address,
                                "type='method_call',interface='org.freedesktop.Notifications'"], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_S
        while "NameAcquired" not in (tmp_path / "monitor.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # the monitor is listening once the bus has named it
        yield address, tmp_path / "monitor.log"
    finally:
        monitor.terminate()
        daemon.terminate()
        monitor.wait(10)
        daemon.wait(10)
        log.close()


async def test_desktop_over_dbus_on_a_session_bus(session_bus, tmp_path, clean_env, monkeypatch):
    address, monitor_log = session_bus
    only_gdbus = tmp_path / "only-gdbus"
    only_gdbus.mkdir()
    (only_gdbus / "gdbus").symlink_to(shutil.which("gdbus"))
    monkeypatch.setenv("PATH", str(only_gdbus))  # no notify-send: the D-Bus call itself
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    monkeypatch.delenv("DISPLAY", raising=False)
    app = make_app(clean_env, tmp_path, notify_desktop=True, notify_toast=False)
    app.emit(RUN_EVENT, done_run(lora_name="cat's v1"))
    await flush(app)
    deadline = time.monotonic() + WAIT_S
    while "member=Notify" not in monitor_log.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    text = monitor_log.read_text()
    assert "member=Notify" in text and "interface=org.freedesktop.Notifications" in text
    assert 'string "LoRA Cloud"' in text
    assert 'string "LoRA ready: cat\'s v1"' in text and 'string "Run run-1 finished for $1.25."' in text
    # no notification daemon answers on this bare bus: the call is made, and its failure recorded
    assert [d.channel for d in app.notify.history] == ["desktop"]
