"""Each notification channel delivers on its own: real aiohttp webhook receivers on 127.0.0.1 that
never answer or trickle a byte at a time hold only the webhook, never the next notice's toast;
the webhook's deadline, backoff and exactly-once; where a webhook may point (settings and, after
DNS, delivery); a ledger with malformed rows."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from aiohttp import web

from comfy_lora_cloud.errors import ConfigError
from comfy_lora_cloud.retry import backoff
from comfy_lora_cloud.service.notify import NOTIFY_EVENT, STALE_CLAIM_S, Notice, WebhookPolicy
from comfy_lora_cloud.settings import Settings
from tests.service.test_notify import make_app

WAIT_S = 30  # an upper bound for a slow shared CPU, never a timing assertion


async def until(condition, what: str) -> None:
    """Wait for ``condition()`` (polling the loop, so the receivers keep serving)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


class SlowReceiver:
    """A webhook endpoint on 127.0.0.1 that records what happens, in order, into ``events``
    (shared with the app's sink, so toasts and webhook requests land on one timeline).

    ``mode`` "hold": a request is answered only when ``release`` is set (until then it never
    answers); "trickle": the next ``trickles`` requests get a 200 whose body comes a byte every
    ``pace`` seconds, for as long as the client stays; later ones are answered at once."""

    def __init__(self, events: list, mode: str, *, trickles: int = 0, pace: float = 1.0):
        self.events = events
        self.mode = mode
        self.trickles = trickles
        self.pace = pace
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = json.loads(await request.read())["key"]
        self.events.append(("hook-in", key))
        if self.mode == "hold":
            await self.release.wait()
        elif self.trickles > 0:
            self.trickles -= 1
            response = web.StreamResponse(status=200)
            await response.prepare(request)
            try:
                while True:
                    await response.write(b".")
                    await asyncio.sleep(self.pace)
            except (ConnectionError, asyncio.CancelledError):  # aiohttp cancels a handler whose client left
                self.events.append(("hook-cut", key))  # the sender hung up on this answer
                raise
        self.events.append(("hook-ok", key))
        return web.Response(text="ok")


async def start_receiver(aiohttp_server, rx: SlowReceiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/hook"))


def notice(app, name: str) -> None:
    app.notify.notice("run_done", f"run:{name}:done", f"LoRA ready: {name}", f"Run {name} finished.")


def webhook_ledger(app) -> dict:
    return {e.key: e for e in app.notify.ledger() if e.channel == "webhook"}


# ---- one channel never waits for another ---------------------------------------------------------
async def test_a_webhook_that_never_answers_does_not_hold_the_next_toast(aiohttp_server, tmp_path, clean_env):
    events: list = []
    rx = SlowReceiver(events, "hold")
    url = await start_receiver(aiohttp_server, rx)
    sink = lambda e, d: events.append(("toast", d["id"])) if e == NOTIFY_EVENT else None  # noqa: E731
    app = make_app(clean_env, tmp_path, webhook_url=url, sink=sink)
    app.notify.webhook_policy = WebhookPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.05, timeout_s=120)

    notice(app, "a")
    await until(lambda: ("hook-in", "run:a:done") in events, "the first notice reaches the webhook")
    notice(app, "b")  # the webhook is still waiting for an answer about "a"
    b_id = Notice("run_done", "run:b:done", "", "", 0).id
    await until(lambda: ("toast", b_id) in events, "the second notice's toast")
    # the order of what happened: b's toast was shown while a's webhook request was unanswered
    assert events.index(("hook-in", "run:a:done")) < events.index(("toast", b_id))
    assert ("hook-ok", "run:a:done") not in events and ("hook-in", "run:b:done") not in events

    rx.release.set()  # the receiver answers at last: the webhook's line goes on, in order
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)
    hooks = [e for e in events if e[0] != "toast"]
    assert hooks == [("hook-in", "run:a:done"), ("hook-ok", "run:a:done"), ("hook-in", "run:b:done"),
                     ("hook-ok", "run:b:done")]
    assert {k: e.state for k, e in webhook_ledger(app).items()} == {"run:a:done": "sent", "run:b:done": "sent"}


async def test_a_trickling_webhook_is_cut_by_its_deadline_retried_with_backoff_and_sent_once(
        aiohttp_server, tmp_path, clean_env):
    events: list = []
    rx = SlowReceiver(events, "trickle", trickles=1, pace=1.0)  # a byte a second: no read timeout ever fires
    url = await start_receiver(aiohttp_server, rx)
    sink = lambda e, d: events.append(("toast", d["id"])) if e == NOTIFY_EVENT else None  # noqa: E731
    slept: list[float] = []
    app = make_app(clean_env, tmp_path, webhook_url=url, sink=sink)
    policy = WebhookPolicy(attempts=3, base_delay_s=0.2, max_delay_s=1.0, timeout_s=4)
    app.notify.webhook_policy = policy
    app.notify.rng = random.Random(7)
    app.notify.sleep = lambda s: (slept.append(s), time.sleep(s))

    notice(app, "a")
    await until(lambda: ("hook-in", "run:a:done") in events, "the first notice reaches the webhook")
    notice(app, "b")
    b_id = Notice("run_done", "run:b:done", "", "", 0).id
    await until(lambda: ("toast", b_id) in events, "the second notice's toast")
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)

    # b's toast came while a's answer was still trickling; the deadline then cut that answer off
    # (the receiver notices the hang-up at its next byte, so "hook-cut" may follow the retry's
    # arrival, never its answer)
    assert events.index(("toast", b_id)) < events.index(("hook-cut", "run:a:done"))
    assert events.index(("hook-cut", "run:a:done")) < events.index(("hook-ok", "run:a:done"))
    hooks = [e for e in events if e[0] in ("hook-in", "hook-ok")]
    assert hooks == [("hook-in", "run:a:done"), ("hook-in", "run:a:done"), ("hook-ok", "run:a:done"),
                     ("hook-in", "run:b:done"), ("hook-ok", "run:b:done")]
    # one wait between a's two attempts, the project's backoff (retry.backoff, its jitter seeded)
    assert slept == [backoff(0, base=policy.base_delay_s, cap=policy.max_delay_s, rng=random.Random(7))]
    ledger = webhook_ledger(app)
    assert ledger["run:a:done"].state == "sent" and "after 2 attempt(s)" in ledger["run:a:done"].detail
    assert "cut off" in ledger["run:a:done"].detail

    # exactly once: the same notices again, here and after a restart, reach the receiver no more
    notice(app, "a")
    notice(app, "b")
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)
    restarted = make_app(clean_env, tmp_path, webhook_url=url, sink=sink)
    notice(restarted, "a")
    notice(restarted, "b")
    assert await asyncio.to_thread(restarted.notify.flush, WAIT_S)
    assert [e for e in events if e[0] == "hook-ok"] == [("hook-ok", "run:a:done"), ("hook-ok", "run:b:done")]
    assert [e[1] for e in events if e[0] == "toast"].count(b_id) == 1


async def test_a_full_channel_queue_drops_unclaimed_and_never_blocks(aiohttp_server, tmp_path, clean_env):
    events: list = []
    rx = SlowReceiver(events, "hold")
    url = await start_receiver(aiohttp_server, rx)
    app = make_app(clean_env, tmp_path, webhook_url=url, notify_toast=False)
    app.notify = type(app.notify)(app, queue_size=3, webhook_policy=WebhookPolicy(attempts=1, timeout_s=120))
    notice(app, "n0")  # queued behind the notifier's own first job (stale claims), then held by the receiver
    await until(lambda: ("hook-in", "run:n0:done") in events, "the first notice reaches the webhook")
    for i in range(1, 6):
        notice(app, f"n{i}")  # returns at once even though the line is full
    dropped = [d.notice.key for d in app.notify.history if d.outcome == "dropped" and d.channel == "webhook"]
    assert dropped == ["run:n4:done", "run:n5:done"]
    rx.release.set()
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)
    assert set(webhook_ledger(app)) == {"run:n0:done", "run:n1:done", "run:n2:done", "run:n3:done"}
    notice(app, "n4")  # never claimed, so announced again it is delivered
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)
    assert webhook_ledger(app)["run:n4:done"].state == "sent"


# ---- where a webhook may point ---------------------------------------------------------------------
TOKEN = "tok-SEKRET-0123456789"


@pytest.mark.parametrize("host, why", [
    ("127.0.0.1:8080", "loopback"), ("127.9.9.9", "loopback"), ("[::1]:8080", "loopback"),
    ("localhost:8080", "loopback"), ("app.localhost", "loopback"), ("2130706433", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("169.254.10.1", "link-local"), ("[fe80::1]", "link-local"),
    ("10.0.0.5", "private"), ("192.168.1.20:5678", "private"), ("172.16.3.4", "private"), ("[fd12::1]", "private"),
])
def test_webhook_url_refuses_this_machine_and_private_networks_unless_allowed(host, why, clean_env):
    url = f"http://{host}/hook?token={TOKEN}"
    with pytest.raises(ConfigError) as refused:
        Settings.load(clean_env, webhook_url=url)
    message = refused.value.message
    assert "webhook_url refused" in message and why in message and "webhook_allow_private = true" in message
    assert TOKEN not in message and "/hook" not in message  # the URL is a secret
    allowed = Settings.load(clean_env, webhook_url=url, webhook_allow_private=True)
    assert allowed.secret("webhook_url") == url


@pytest.mark.parametrize("host, why", [
    ("169.254.169.254", "metadata"), ("[fd00:ec2::254]", "metadata"), ("metadata.google.internal", "metadata"),
    ("0.0.0.0:8080", "unspecified"), ("[::]", "unspecified"), ("224.0.0.1", "multicast"),
])
def test_webhook_url_never_reaches_metadata_or_non_host_addresses(host, why, clean_env):
    for allow in (False, True):
        with pytest.raises(ConfigError, match=why):
            Settings.load(clean_env, webhook_url=f"http://{host}/latest/meta-data", webhook_allow_private=allow)


def test_the_allowance_is_read_from_the_files_a_user_writes(clean_env):
    clean_env.mkdir(parents=True, exist_ok=True)
    (clean_env / "secrets.toml").write_text('webhook_url = "http://192.168.1.20:5678/webhook/lora"\n')
    (clean_env / "secrets.toml").chmod(0o600)
    with pytest.raises(ConfigError, match="private address"):
        Settings.load(clean_env)
    (clean_env / "config.toml").write_text("webhook_allow_private = true\n")
    assert Settings.load(clean_env).secret("webhook_url") == "http://192.168.1.20:5678/webhook/lora"
    assert Settings.load(clean_env, webhook_url="https://hooks.slack.com/services/T0/B1/x").webhook_allow_private


class Names:
    """A resolver the notifier asks (as it asks the system's): every question is kept."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answers[host]


@pytest.mark.parametrize("answer", [["127.0.0.1"], ["93.184.216.34", "127.0.0.1"], ["169.254.169.254"]])
async def test_a_name_that_resolves_to_a_forbidden_address_is_refused_at_delivery(answer, aiohttp_server, tmp_path,
                                                                                  clean_env):
    events: list = []
    rx = SlowReceiver(events, "trickle")
    url = await start_receiver(aiohttp_server, rx)
    port = url.split(":")[2].split("/")[0]
    named = f"http://hooks.example.test:{port}/hook"  # a name: settings cannot tell where it points
    app = make_app(clean_env, tmp_path, webhook_url=named, webhook_allow_private=False, notify_toast=False)
    names = Names({"hooks.example.test": answer})
    app.notify.webhook_resolve = names
    notice(app, "a")
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)
    entry = webhook_ledger(app)["run:a:done"]
    assert entry.state == "failed" and "refused" in entry.detail and "resolves" in entry.detail
    assert answer[-1] in entry.detail
    assert names.asked == ["hooks.example.test"]  # refused once, not retried
    assert events == []  # nothing was sent anywhere


async def test_a_name_is_connected_to_at_the_address_that_was_checked(aiohttp_server, tmp_path, clean_env):
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver, host="127.0.0.1")
    named = f"http://hooks.example.test:{server.port}/hook"
    app = make_app(clean_env, tmp_path, webhook_url=named, notify_toast=False)  # allowance on (make_app)
    names = Names({"hooks.example.test": ["127.0.0.1"]})
    app.notify.webhook_resolve = names
    notice(app, "a")
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)
    # the .test name resolves nowhere else: the request reached 127.0.0.1 because the sender
    # connected to the address it had checked, and it still named the host it was given
    assert seen == [f"hooks.example.test:{server.port}"] and names.asked == ["hooks.example.test"]
    assert webhook_ledger(app)["run:a:done"].state == "sent"


# ---- the ledger, damaged ----------------------------------------------------------------------------
MALFORMED = {
    "notify:toast:run:x:done": "{not json",
    "notify:webhook:run:y:done": "[1, 2]",
    "notify:toast:run:z:done": json.dumps({"state": "sent", "at": "yesterday"}),
    "notify:desktop:run:w:done": '{"state": "sent", "at": 1e999}',
    "notify:webhook:run:v:done": json.dumps({"state": "pending", "at": time.time() - 2 * STALE_CLAIM_S,
                                             "notice": {"kind": 5}}),
}


async def test_malformed_ledger_rows_are_listed_as_damaged_and_stop_nothing(aiohttp_server, tmp_path, clean_env):
    events: list = []
    rx = SlowReceiver(events, "trickle")
    url = await start_receiver(aiohttp_server, rx)
    app = make_app(clean_env, tmp_path, webhook_url=url, notify_toast=False)
    for key, value in MALFORMED.items():
        app.state.set_kv(key, value)
    good = Notice("run_done", "run:u:done", "LoRA ready: u", "Run u finished.", time.time(), {"run_id": "u"})
    stale = {"state": "pending", "at": time.time() - STALE_CLAIM_S - 5, "owner": "gone:1", "notice": good.__dict__}
    app.state.set_kv("notify:webhook:run:u:done", json.dumps(stale))

    notice(app, "t")  # starts the webhook's line: stale claims first (u), then t
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)
    assert [e[1] for e in events if e[0] == "hook-ok"] == ["run:u:done", "run:t:done"]
    entries = app.notify.ledger()
    damaged = {f"notify:{e.channel}:{e.key}" for e in entries if e.state == "damaged"}
    assert damaged == set(MALFORMED)
    assert all(e.detail.startswith("unreadable ledger row") for e in entries if e.state == "damaged")
    summary = await asyncio.to_thread(app.notify.summary)
    assert len(summary.damaged) == len(MALFORMED)
    assert [e.key for e in summary.recent[:2]] == ["run:t:done", "run:u:done"]


def _certificate(folder, name: str):
    """A self-signed certificate for the DNS name ``name`` (cryptography comes with asyncssh)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return folder / f"{name}.pem", folder / f"{name}.key"


@pytest.mark.parametrize("served_name, delivered", [("hooks.example.test", True), ("other.example.test", False)])
async def test_https_to_a_checked_address_still_verifies_the_name(served_name, delivered, aiohttp_server, tmp_path,
                                                                  clean_env):
    import ssl

    import httpx

    cert, key = _certificate(tmp_path, served_name)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.headers["Host"])
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver, host="127.0.0.1", ssl=serving)
    app = make_app(clean_env, tmp_path, webhook_url=f"https://hooks.example.test:{server.port}/hook",
                   notify_toast=False)
    app.notify.webhook_resolve = Names({"hooks.example.test": ["127.0.0.1"]})
    app.notify.webhook_policy = WebhookPolicy(attempts=1, timeout_s=WAIT_S)
    # trusts the test's certificate (as a system store trusts a public one); the name it must
    # carry is the URL's host, not the address connected to
    app.notify.webhook_transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=str(cert)))
    notice(app, "a")
    assert await asyncio.to_thread(app.notify.flush, WAIT_S)
    entry = webhook_ledger(app)["run:a:done"]
    if delivered:
        assert entry.state == "sent" and seen == [f"hooks.example.test:{server.port}"]
    else:  # a certificate for another name: refused by the TLS check, nothing sent
        assert entry.state == "failed" and "ConnectError" in entry.detail and seen == []


def test_a_run_dated_ahead_of_this_clock_is_news_now():
    from comfy_lora_cloud.service.events import RUN_EVENT
    from comfy_lora_cloud.service.notify import notices_for, webhook_body

    now = time.time()
    [n] = notices_for(RUN_EVENT, {"id": "r", "state": "done", "updated_at": 1e300}, now)
    assert n.at == now and json.loads(webhook_body(n, "json"))["time"].endswith("Z")
    assert notices_for(RUN_EVENT, {"id": "r", "state": "done", "updated_at": float("nan")}, now) == []
