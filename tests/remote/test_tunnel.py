"""remote/ against a real OpenSSH server on 127.0.0.1: the pack's key, host keys pinned per
instance, a local port forward to a small HTTP app that survives a dropped link (and a link that
stops answering, noticed by keepalive), and every failure a clear TunnelError."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat

import httpx
import pytest
from aiohttp import web

from comfy_lora_cloud.errors import TunnelError
from comfy_lora_cloud.remote.hostkeys import HostKeyChanged, HostKeyStore
from comfy_lora_cloud.remote.keys import ensure_keypair
from comfy_lora_cloud.remote.tunnel import SshTarget, Tunnel, connect

WAIT = 20.0  # an upper bound for a busy machine, never a timing assertion


@pytest.fixture
def keys(tmp_path):
    return ensure_keypair(tmp_path / "ssh")


@pytest.fixture
def hostkeys(tmp_path):
    return HostKeyStore(tmp_path / "ssh" / "host_keys.json")


@pytest.fixture
async def toy(aiohttp_server):
    hits = []

    async def hello(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"hello": request.path, "host": request.headers.get("Host")})

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    server = await aiohttp_server(app, host="127.0.0.1")
    return server.port, hits


def _target(sshd, instance="vast:1"):
    return SshTarget("127.0.0.1", sshd.port, sshd.user, instance)


def test_the_key_pair_is_private_and_made_once(tmp_path):
    first = ensure_keypair(tmp_path / "ssh")
    assert stat.S_IMODE(first.private_path.stat().st_mode) == 0o600
    assert first.public_key.startswith("ssh-ed25519 ") and "PRIVATE" not in first.public_key
    os.chmod(first.private_path, 0o644)  # widened by someone: narrowed again, same key
    again = ensure_keypair(tmp_path / "ssh")
    assert again.public_key == first.public_key and stat.S_IMODE(again.private_path.stat().st_mode) == 0o600


async def test_first_contact_pins_the_host_key_and_a_changed_key_is_refused(sshd, keys, hostkeys):
    sshd.authorize(keys.public_key)
    conn = await connect(_target(sshd), keys.private_path, hostkeys)
    result = await conn.run("echo ok", check=True)
    conn.close()
    assert result.stdout.strip() == "ok"
    recorded = json.loads(hostkeys.path.read_text())["vast:1"]["key"]
    assert recorded.split()[:2] == sshd.host_public_key.split()[:2]
    assert stat.S_IMODE(hostkeys.path.stat().st_mode) == 0o600

    # the same instance again: the pinned key matches
    (await connect(_target(sshd), keys.private_path, hostkeys)).close()

    # the endpoint now shows another key (the instance was rebuilt, or someone is in between)
    sshd.restart(new_host_key=True)
    with pytest.raises(HostKeyChanged) as err:
        await connect(_target(sshd), keys.private_path, hostkeys)
    assert "does not match the one recorded" in err.value.message and err.value.exit_code == 5
    # another instance behind the same endpoint has its own record: first contact again
    (await connect(_target(sshd, "vast:2"), keys.private_path, hostkeys)).close()


@pytest.mark.parametrize("damaged", [
    "[]",  # valid JSON, another shape: read as "no keys", it would trust any key again
    '{"vast:1": "ssh-ed25519 AAAA"}',
    '{"vast:1": {"key": 5}}',
    '{"vast:1": {"host": "x"}}',
    '{"vast:1": {"key": "not-a-key"}}',
    "{" * 100_000,
    '{"vast:1": {"key": "ssh-ed25519 AAAA"}',  # cut off
])
async def test_a_damaged_host_key_record_refuses_every_connection(sshd, keys, hostkeys, damaged):
    sshd.authorize(keys.public_key)
    hostkeys.path.parent.mkdir(parents=True, exist_ok=True)
    hostkeys.path.write_text(damaged)
    for instance in ("vast:1", "vast:2"):  # the instance that had a key, and one that never had
        with pytest.raises(TunnelError) as err:
            await connect(_target(sshd, instance), keys.private_path, hostkeys)
        assert f"the host key record {hostkeys.path} is damaged" in err.value.message
        assert "move it aside" in err.value.message
    assert hostkeys.path.read_text() == damaged  # left as it was, for the user to look at
    hostkeys.path.rename(hostkeys.path.with_name("host_keys.json.damaged"))
    (await connect(_target(sshd), keys.private_path, hostkeys)).close()  # moved aside: first contact again
    assert hostkeys.get("vast:1").split()[:2] == sshd.host_public_key.split()[:2]


async def test_failures_are_clear_tunnel_errors(sshd, keys, hostkeys, tmp_path):
    with pytest.raises(TunnelError) as err:  # our key is not authorized there
        await connect(_target(sshd), keys.private_path, hostkeys)
    assert "refused the pack's SSH key" in err.value.message
    assert hostkeys.get("vast:1") is None  # no key is pinned by a failed login

    from tests.fixtures.sshd import free_port

    closed = SshTarget("127.0.0.1", free_port(), sshd.user, "vast:9")
    with pytest.raises(TunnelError) as err:
        await connect(closed, keys.private_path, hostkeys, timeout=5)
    assert "nothing accepts SSH" in err.value.message


async def test_the_tunnel_forwards_and_survives_a_dropped_link(sshd, keys, hostkeys, toy):
    port, hits = toy
    sshd.authorize(keys.public_key)
    tunnel = await Tunnel(_target(sshd), keys.private_path, hostkeys, remote_port=port, retry_base=0.05).start()
    try:
        async with httpx.AsyncClient(timeout=WAIT) as client:
            r = await client.get(tunnel.url + "/one")
            assert r.json()["hello"] == "/one"
            local_port = tunnel.local_port

            assert sshd.drop_connections() >= 1  # the link dies as on a network failure
            await _eventually(lambda: tunnel.reconnects >= 1)
            r = await client.get(tunnel.url + "/two")  # same local port, the new link behind it
            assert r.json()["hello"] == "/two" and tunnel.local_port == local_port and tunnel.state == "up"

            # the next reconnect meets another host key: the tunnel fails for good
            sshd.restart(new_host_key=True)
            await _eventually(lambda: tunnel.state == "failed")
            assert "does not match" in (tunnel.last_error or "")
            with pytest.raises(httpx.TransportError):
                await client.get(tunnel.url + "/three")
        assert hits == ["/one", "/two"]
    finally:
        await tunnel.close()


async def test_keepalive_notices_a_link_that_stopped_answering(sshd, keys, hostkeys, toy):
    port, _hits = toy
    sshd.authorize(keys.public_key)
    tunnel = await Tunnel(_target(sshd), keys.private_path, hostkeys, remote_port=port, keepalive_s=0.3,
                          keepalive_max=2, retry_base=0.05).start()
    frozen = sshd.children()
    try:
        for pid in frozen:  # the server side hangs without closing anything (a dead route)
            os.kill(pid, signal.SIGSTOP)
        await _eventually(lambda: tunnel.reconnects >= 1)
        async with httpx.AsyncClient(timeout=WAIT) as client:
            assert (await client.get(tunnel.url + "/alive")).json()["hello"] == "/alive"
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await tunnel.close()


async def _eventually(cond, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)
