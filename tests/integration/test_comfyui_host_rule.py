"""Opt-in: the Host rule on a real ComfyUI started with ``--listen``.

ComfyUI's own origin middleware only looks at requests whose Host is a loopback name, so a page
on a rebound DNS name reaches a pack's routes unchecked; the pack's guard must refuse it. Checked
with ``--listen 0.0.0.0`` (any IP literal is this machine; names need ``allowed_hosts``) and with
``--listen 127.0.0.1``, on both URL forms ComfyUI registers (``/x`` and ``/api/x``).

Needs LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR (a git directory holding Comfy-Org/ComfyUI).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO.parent / "shared" / "tools" / "comfyui-harness.sh"
STOP = REPO.parent / "shared" / "tools" / "comfyui-stop.sh"

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(os.environ.get("LORA_CLOUD_TEST_COMFYUI") != "1",
                       reason="opt-in: set LORA_CLOUD_TEST_COMFYUI=1 and COMFY_MIRROR to run a real ComfyUI"),
]
PREFIXES = ("/lora_cloud/api", "/api/lora_cloud/api")


@pytest.fixture(scope="module", params=["0.0.0.0", "127.0.0.1"])
def comfyui(request, tmp_path_factory):
    if not HARNESS.exists() or not os.environ.get("COMFY_MIRROR"):
        pytest.fail("LORA_CLOUD_TEST_COMFYUI=1 needs ../shared/tools/comfyui-harness.sh and COMFY_MIRROR")
    home = tmp_path_factory.mktemp("host-rule-home")
    port = os.environ.get("COMFY_PORT", "8189")
    env = {**os.environ, "COMFY_PORT": port, "COMFY_EXTRA_ARGS": f"--listen {request.param}",
           "LORA_CLOUD_HOME": str(home), "HARNESS_SKIP_PACK_REQS": os.environ.get("HARNESS_SKIP_PACK_REQS", "0")}
    subprocess.run(["bash", str(HARNESS), f"{REPO}:comfy_lora_cloud"], env=env, check=True, timeout=1800)
    try:
        yield request.param, int(port), home
    finally:
        subprocess.run(["bash", str(STOP)], env=env, timeout=60)


def _call(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
    """One request with exactly these headers (Host included), as a rebinding page would send."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_foreign_host_is_refused_and_own_names_answer(comfyui):
    listen, port, home = comfyui
    status, body = _call(port, "GET", PREFIXES[1] + "/token", {"Host": f"127.0.0.1:{port}"})
    assert status == 200, body
    token = json.loads(body)["token"]
    assert (home / "comfy_token").read_text() == token

    for prefix in PREFIXES:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert _call(port, "GET", prefix + "/token", {"Host": host})[0] == 200, host
        for host in (f"rebind.evil.example:{port}", "rebind.evil.example", f"localhost.evil.example:{port}"):
            for headers in ({"Host": host}, {"Host": host, "Origin": f"http://{host}"}):
                status, body = _call(port, "GET", prefix + "/token", headers)
                assert status == 403 and token.encode() not in body, (prefix, headers, status)
                assert _call(port, "GET", prefix + "/runs", headers)[0] == 403
            status, _ = _call(port, "POST", prefix + "/budgets",
                              {"Host": host, "Content-Type": "application/json", "X-LoRA-Cloud-Token": token},
                              b'{"max_dph": 0.5}')
            assert status == 403
        # an IP literal that is not loopback: this machine's address when listening on a wildcard
        status, _ = _call(port, "GET", prefix + "/runs", {"Host": f"10.1.2.3:{port}"})
        assert status == (200 if listen == "0.0.0.0" else 403)
        # a same-host Origin on another port is another origin
        status, _ = _call(port, "GET", prefix + "/token", {"Host": f"127.0.0.1:{port}", "Origin": "http://127.0.0.1"})
        assert status == 403
    assert not (home / "config.toml").exists()  # no budget was changed

    # ComfyUI itself answers the rebound name: the pack's rule is what protects its routes
    assert _call(port, "GET", "/object_info/LoraLoader", {"Host": f"rebind.evil.example:{port}"})[0] == 200
