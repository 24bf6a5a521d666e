"""Benchmark: what opening the vast.ai provider costs the loop that opens it.

Every use of the provider builds a fresh client (an httpx client is bound to the loop it first
ran on, and one process serves several loops), and the guard opens one every round. Interleaved
rounds of: a plain ``httpx.AsyncClient`` as httpx builds it (it loads the CA bundle each time),
and :class:`VastClient`, which shares one TLS context per process. Medians, and their ratio.

    .venv/bin/python benchmarks/provider_open.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from comfy_lora_cloud.providers.vast_client import VastClient  # noqa: E402


async def main(rounds: int) -> None:
    plain: list[float] = []
    shared: list[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        client = httpx.AsyncClient(base_url="https://console.vast.ai")
        plain.append(time.perf_counter() - t)
        await client.aclose()
        t = time.perf_counter()
        vast = VastClient("https://console.vast.ai", "benchmark-key")
        shared.append(time.perf_counter() - t)
        await vast.aclose()
    a, b = statistics.median(plain), statistics.median(shared)
    print(f"httpx.AsyncClient (CA bundle loaded each time): median {a * 1000:.2f} ms")
    print(f"VastClient (one TLS context per process):       median {b * 1000:.2f} ms")
    print(f"ratio: {a / b:.0f}x less time on the loop per provider use")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(parser.parse_args().rounds))
