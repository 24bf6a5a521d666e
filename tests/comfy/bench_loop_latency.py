"""Benchmark (not a test): does making thumbnails stall the server's event loop?

    .venv/bin/python -m tests.comfy.bench_loop_latency

Serves the real routes over a LocalStorage dataset of large photos and measures the latency of
a cheap route (GET /lora_cloud/api/budgets) three ways: idle; while 8 thumbnail requests run
through the routes (Pillow in worker threads); and, as the baseline to beat, while the same
thumbnails are made on the event loop itself. Prints medians, maxima and ratios.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from comfy_lora_cloud.comfy.routes import PREFIX, register_routes
from comfy_lora_cloud.service.app import App
from comfy_lora_cloud.service.library.media import make_thumbnail
from comfy_lora_cloud.settings import Settings
from comfy_lora_cloud.storage import LocalStorage, layout

N_IMAGES = 8


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (2000, 3000, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


async def probe(client: TestClient, stop: asyncio.Event) -> list[float]:
    samples = []
    while not stop.is_set():
        t0 = time.perf_counter()
        resp = await client.get(f"{PREFIX}/budgets")
        await resp.read()
        samples.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.01)
    return samples


async def measure(client: TestClient, load) -> list[float]:
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(client, stop))
    await load()
    stop.set()
    return await probing


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(Path(tmp) / "home")
        storage = LocalStorage(Path(tmp) / "bucket")
        raw = [photo(i) for i in range(N_IMAGES)]
        for i, data in enumerate(raw):
            storage.write_bytes(layout.dataset_prefix("big") + f"{i:03}.jpg", data)
        lora_app = App(settings, storage=storage)
        routes = web.RouteTableDef()
        register_routes(routes, lambda: lora_app)

        @routes.get("/blocking-thumb/{i}")
        async def blocking_thumb(request: web.Request) -> web.Response:  # the anti-pattern
            return web.Response(body=make_thumbnail(raw[int(request.match_info["i"])], 256))

        app = web.Application()
        app.add_routes(routes)
        async with TestClient(TestServer(app)) as client:
            async def idle():
                await asyncio.sleep(1.0)

            async def threaded():
                await asyncio.gather(*(client.get(f"{PREFIX}/datasets/big/thumbs/{i:03}.jpg?size=256")
                                       for i in range(N_IMAGES)))

            async def blocking():
                await asyncio.gather(*(client.get(f"/blocking-thumb/{i}") for i in range(N_IMAGES)))

            results = {name: await measure(client, load)
                       for name, load in (("idle", idle), ("threaded", threaded), ("blocking", blocking))}
    base = statistics.median(results["idle"])
    for name, ms in results.items():
        print(f"{name:9s} n={len(ms):3d}  median {statistics.median(ms):7.2f} ms  max {max(ms):8.2f} ms  "
              f"median/idle {statistics.median(ms) / base:6.1f}x")
    print(f"max latency, blocking / threaded: {max(results['blocking']) / max(results['threaded']):.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
