"""The Host and Origin rules (comfy/routes/http_guard.py) on their own, and through the routes with the
``allowed_hosts`` setting and ComfyUI's ``--listen`` address."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.comfy.routes.http_guard import HostPolicy, HostPort, json_depth, parse_authority, parse_origin
from comfy_lora_cloud.comfy.routes import PREFIX
from comfy_lora_cloud.comfy.token import HEADER
from comfy_lora_cloud.settings import set_value

from tests.comfy.conftest import comfy_style_app, token_headers


@pytest.mark.parametrize("value, parsed", [
    ("127.0.0.1:8188", HostPort("127.0.0.1", 8188)),
    ("LOCALHOST.", HostPort("localhost", None)),
    ("[::1]:8188", HostPort("::1", 8188)),
    ("comfy.example.com", HostPort("comfy.example.com", None)),
    ("", None), ("[::1", None), ("::1", None), ("a:1:2", None), ("a:99999", None), ("a:0", None), ("a:+80", None),
    ("a b", None), ("evil@127.0.0.1", None), ("127.0.0.1/x", None), ("127.0.0.1%2f", None), (":8188", None),
    ("[127.0.0.1]", None), ("caf\u00e9", None),
])
def test_parse_authority(value, parsed):
    assert parse_authority(value) == parsed


@pytest.mark.parametrize("value, parsed", [
    ("http://127.0.0.1:8188", ("http", "127.0.0.1", 8188)),
    ("https://Comfy.Example.com", ("https", "comfy.example.com", 443)),
    ("http://127.0.0.1", ("http", "127.0.0.1", 80)),
    ("null", None), ("file://", None), ("chrome-extension://abc", None), ("http://a/b", None), ("http://u@a", None),
])
def test_parse_origin(value, parsed):
    assert parse_origin(value) == parsed


def test_host_rule_loopback_listen_and_allowed_names():
    local = HostPolicy(["127.0.0.1"])
    for name in ("localhost", "127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1", "app.localhost"):
        assert local.allows_host(name), name
    for name in ("rebind.evil.example", "192.168.1.5", "localhost.evil.example", "127.0.0.1.nip.io", "0.0.0.0"):
        assert not local.allows_host(name), name

    lan = HostPolicy(["192.168.1.5"], ["comfy.lan", "https://comfy.example.com"])
    assert lan.allows_host("192.168.1.5") and lan.allows_host("comfy.lan") and lan.allows_host("comfy.example.com")
    assert not lan.allows_host("192.168.1.6") and not lan.allows_host("evil.example")
    # a TLS proxy in front: the declared origin is accepted whatever Host the proxy sends on
    assert lan.allows_origin(("https", "comfy.example.com", 443), ("http", "127.0.0.1", 8188))
    assert not lan.allows_origin(("http", "comfy.example.com", 443), ("http", "127.0.0.1", 8188))

    # --listen 0.0.0.0: the machine's addresses are not known ahead, and a rebinding page always
    # comes under a DNS name, so any IP literal is fine; names still need allowed_hosts
    wild = HostPolicy(["0.0.0.0", "::"])
    assert wild.allows_host("192.168.1.5") and wild.allows_host("fe80::1")
    assert not wild.allows_host("rebind.evil.example") and not wild.allows_host("mybox.local")


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth('{"a": "[[[[[[", "b": [1, {"c": "\\"]]]"}]}') == 3
    assert json_depth("[" * 40 + "]" * 40) == 40


async def test_allowed_hosts_setting_lets_a_proxy_name_in(aiohttp_client, seeded):
    client = await aiohttp_client(comfy_style_app(lambda: seeded.app))
    port = client.server.port
    proxied = {"Host": "comfy.example.com", "Origin": "https://comfy.example.com"}
    resp = await client.get(f"{PREFIX}/token", headers=proxied)
    assert resp.status == 403 and (await resp.json())["error"] == "ForeignHost"

    set_value(seeded.settings.home, "allowed_hosts", "comfy.example.com, https://comfy.example.com")
    seeded.app.source.invalidate()  # the app re-reads changed files within a second; now, for the test
    resp = await client.get(f"{PREFIX}/token", headers=proxied)
    assert resp.status == 200 and (await resp.json())["header"] == HEADER
    # the name is allowed; origins on it other than the declared one and the request's own are not
    assert (await client.get(f"{PREFIX}/runs", headers={"Host": "comfy.example.com",
                                                        "Origin": "http://comfy.example.com"})).status == 200
    for origin in ("https://comfy.example.com:8443", f"http://comfy.example.com:{port}", "https://evil.example"):
        resp = await client.get(f"{PREFIX}/runs", headers={"Host": "comfy.example.com", "Origin": origin})
        assert resp.status == 403, origin
    resp = await client.post(f"{PREFIX}/budgets", json={"max_dph": 1.25},
                             headers={**await token_headers(client), **proxied})
    assert resp.status == 200, await resp.text()


async def test_listen_address_is_allowed(aiohttp_client, seeded):
    client = await aiohttp_client(comfy_style_app(lambda: seeded.app, listen=["10.1.2.3"]))
    assert (await client.get(f"{PREFIX}/runs", headers={"Host": "10.1.2.3:8188"})).status == 200
    assert (await client.get(f"{PREFIX}/runs", headers={"Host": "10.1.2.4:8188"})).status == 403


async def test_every_answer_says_nosniff(comfy_client):
    for path in ("/token", "/runs", "/runs/nope", "/datasets/..%2Fx/images"):
        resp = await comfy_client.get(PREFIX + path)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
    resp = await comfy_client.get(PREFIX + "/runs", headers={"Host": "evil.example"})
    assert resp.status == 403 and resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "evil.example" not in await resp.text()  # refusals echo nothing from the request
