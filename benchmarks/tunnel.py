"""Benchmark: what the SSH tunnel (remote/tunnel.py) costs and how fast it comes back.

A real OpenSSH server on 127.0.0.1 (as the tests start it) forwards to a small aiohttp app that
answers like ComfyUI's /history (a few KB of JSON) and /view (a 1 MB image). Measured: the median
latency of a small request and the throughput of a large one, directly and through the tunnel
(ratios), and the time from a dropped link (every sshd session killed) to the next answer through
the same local port. Not a test: it prints figures.

    .venv/bin/python benchmarks/tunnel.py [--requests 200]

Target: a dropped link answers again within 2 s; a small request through the tunnel adds
milliseconds, not tens of them (on a real link the network dominates).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from aiohttp import web  # noqa: E402

from comfy_lora_cloud.remote.hostkeys import HostKeyStore  # noqa: E402
from comfy_lora_cloud.remote.keys import ensure_keypair  # noqa: E402
from comfy_lora_cloud.remote.tunnel import SshTarget, Tunnel  # noqa: E402
from tests.fixtures.sshd import Sshd, free_port  # noqa: E402

SMALL = {"prompt": ["x" * 64] * 40, "outputs": {"9": {"images": [{"filename": "a.png"}]}}}
BIG = os.urandom(1024 * 1024)


async def serve() -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/history", lambda r: web.json_response(SMALL))
    app.router.add_get("/view", lambda r: web.Response(body=BIG, content_type="image/png"))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def latencies(url: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=30) as client:
        await client.get(url + "/history")
        for _ in range(n):
            t = time.perf_counter()
            (await client.get(url + "/history")).raise_for_status()
            out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(url: str, n: int = 20) -> float:
    async with httpx.AsyncClient(timeout=60) as client:
        t = time.perf_counter()
        for _ in range(n):
            assert len((await client.get(url + "/view")).content) == len(BIG)
        return n * len(BIG) / (time.perf_counter() - t) / 1e6


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sshd = Sshd(root / "sshd", free_port(), getpass.getuser())
        sshd.root.mkdir()
        sshd.start()
        keys = ensure_keypair(root / "ssh")
        sshd.authorize(keys.public_key)
        runner, port = await serve()
        tunnel = await Tunnel(SshTarget("127.0.0.1", sshd.port, sshd.user, "bench:1"), keys.private_path,
                              HostKeyStore(root / "ssh" / "host_keys.json"), port, retry_base=0.05).start()
        try:
            direct = await latencies(f"http://127.0.0.1:{port}", n)
            tunneled = await latencies(tunnel.url, n)
            mb_direct = await throughput(f"http://127.0.0.1:{port}")
            mb_tunnel = await throughput(tunnel.url)
            print(f"small request, median of {n}: direct {statistics.median(direct):.2f} ms, "
                  f"tunnel {statistics.median(tunneled):.2f} ms "
                  f"({statistics.median(tunneled) / statistics.median(direct):.1f}x)")
            print(f"1 MB responses: direct {mb_direct:.0f} MB/s, tunnel {mb_tunnel:.0f} MB/s "
                  f"({mb_tunnel / mb_direct:.2f}x)")
            drops = []
            for _ in range(5):
                t = time.perf_counter()
                sshd.drop_connections()
                async with httpx.AsyncClient(timeout=30) as client:
                    while True:
                        try:
                            (await client.get(tunnel.url + "/history")).raise_for_status()
                            break
                        except httpx.HTTPError:
                            await asyncio.sleep(0.01)
                drops.append(time.perf_counter() - t)
            print(f"dropped link -> answering again through the same port: median {statistics.median(drops):.2f} s, "
                  f"max {max(drops):.2f} s over {len(drops)} drops ({tunnel.reconnects} reconnects)")
        finally:
            await tunnel.close()
            await runner.cleanup()
            sshd.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    asyncio.run(main(ap.parse_args().requests))
