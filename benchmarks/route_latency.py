"""Benchmark: does heavy work started through the pack stall ComfyUI's server loop?

Serves the pack's real routes on an aiohttp server (as ComfyUI does, same process) over GCS (the
emulator behind a 30 ms-per-request proxy) and measures a cheap route (GET /budgets, every
10 ms) while, on a worker thread as a ComfyUI node would:

* nothing runs (idle);
* a 1,000-file sync runs (``app.mirror`` plan + apply: 1,000 files of 50 KB), in this process
  (the baseline: what happened before) and through the pack's worker process (:mod:`offload`);
* a 100-image preparation runs (``app.library.prepare``: 100 photos, style, no captions, then
  published), in this process and through the worker;
* the same 100 photos are uploaded as a plain folder (``app.library.upload_dataset``: every
  image decoded and hashed for the manifest, then published), in this process and through the
  worker.

Prints the median, p99 and max of each, and the ratios against idle.

    .venv/bin/python benchmarks/route_latency.py [--files 1000] [--photos 100] [--delay-ms 30]

Targets, through the worker: p99 under 20 ms and max under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from benchmarks.common import make_files, start_proxy  # noqa: E402
from comfy_lora_cloud.comfy.routes import PREFIX, register_routes  # noqa: E402
from comfy_lora_cloud.service.library import Offload
from comfy_lora_cloud.service.app import App  # noqa: E402
from comfy_lora_cloud.settings import Settings  # noqa: E402
from comfy_lora_cloud.storage import open_storage  # noqa: E402
from tests.fixtures.gcs_emulator import start_emulator, stop_emulator  # noqa: E402


def make_photos(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        base = np.linspace(0, 255, 1280, dtype=np.uint8)[None, :, None].repeat(960, 0).repeat(3, 2)
        noise = rng.integers(0, 40, (960, 1280, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(base // 2 + noise + (i % 50)).save(out, "JPEG", quality=90)
        (root / f"photo_{i:03}.jpg").write_bytes(out.getvalue())


async def probe(client: TestClient, stop: asyncio.Event) -> list[float]:
    samples = []
    while not stop.is_set():
        t0 = time.perf_counter()
        resp = await client.get(f"{PREFIX}/budgets")
        await resp.read()
        samples.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.01)
    return samples


async def measure(client: TestClient, load) -> tuple[list[float], float]:
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(client, stop))
    await asyncio.sleep(0.2)
    t = time.perf_counter()
    await load()
    took = time.perf_counter() - t
    stop.set()
    return await probing, took


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {"n": len(ms), "median": statistics.median(ms), "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max": ordered[-1]}


async def run(args: argparse.Namespace, tmp: Path, url: str) -> None:
    src = tmp / "src"
    make_files(src, args.files, 50 * 1000)
    photos = tmp / "photos"
    make_photos(photos, args.photos)
    home = tmp / "home"
    settings = Settings.load(home)
    storage = open_storage(url, settings=settings)
    # the same home and bucket, with its heavy work in this process or in the pack's worker
    apps = {False: App(settings, storage=storage, offload=Offload.here()),
            True: App(settings, storage=storage, offload=Offload.in_workers(home))}
    current = {"app": apps[False]}
    routes = web.RouteTableDef()
    register_routes(routes, lambda: current["app"])
    server_app = web.Application()
    server_app.add_routes(routes)
    n = {"i": 0}

    def on(flag: bool):
        current["app"] = apps[flag]

    async def idle():
        await asyncio.sleep(3.0)

    async def sync_load():
        n["i"] += 1
        app = current["app"]
        plan = await app.mirror.plan_push(src, f"bench/sync-{n['i']}/")
        await app.mirror.apply(plan)

    async def prepare_load():
        n["i"] += 1
        await current["app"].library.prepare(str(photos), f"prep-{n['i']}", lora_type="style", trigger="sks", resolution=512)

    async def upload_load():  # a plain folder (no dataset.json): decoded, hashed, then published
        n["i"] += 1
        await current["app"].library.upload_dataset(photos, f"plain-{n['i']}")

    scenarios = [("idle", False, idle), ("sync, in the server process", False, sync_load),
                 ("sync, through the worker", True, sync_load),
                 ("prepare, in the server process", False, prepare_load),
                 ("prepare, through the worker", True, prepare_load),
                 ("upload, in the server process", False, upload_load),
                 ("upload, through the worker", True, upload_load)]
    if args.only:
        scenarios = [sc for sc in scenarios if sc[0] == "idle" or sc[0].startswith(args.only)]
    scenarios = scenarios[:1] + scenarios[1:] * args.rounds
    results: dict[str, tuple[dict[str, float], float]] = {}
    samples: dict[str, list[float]] = {}
    took_all: dict[str, float] = {}
    async with TestClient(TestServer(server_app)) as client:
        await (await client.get(f"{PREFIX}/budgets")).read()
        for label, flag, load in scenarios:  # each round runs every scenario once (interleaved)
            on(flag)
            ms, took = await measure(client, load)
            samples.setdefault(label, []).extend(ms)
            took_all[label] = took_all.get(label, 0.0) + took
    results = {label: (summary(ms), took_all[label]) for label, ms in samples.items()}
    on(False)
    apps[True].offload.close()
    idle_s = results["idle"][0]
    print(f"\n{args.files} files x 50 KB, {args.photos} photos 1280x960, {args.delay_ms:.0f} ms/request proxy, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for label, (s, took) in results.items():
        print(f"  {label:32s} n={s['n']:4d}  median {s['median']:6.1f} ms  p99 {s['p99']:6.1f} ms  "
              f"max {s['max']:6.1f} ms  (p99/idle {s['p99'] / idle_s['p99']:4.1f}x; loads took {took:5.1f} s)")
    ok = all(results[k][0]["p99"] < 20 and results[k][0]["max"] < 50
             for k in ("sync, through the worker", "prepare, through the worker", "upload, through the worker")
             if k in results)
    print(f"targets through the worker (p99 < 20 ms, max < 50 ms): {'MET' if ok else 'NOT MET'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--delay-ms", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; samples are pooled")
    ap.add_argument("--only", choices=["sync", "prepare", "upload"])
    args = ap.parse_args()
    emu = start_emulator()
    if emu is None:
        sys.exit("gcp-storage-emulator is not installed")
    proxy, proxy_url = start_proxy(emu.url, args.delay_ms)
    try:
        os.environ["STORAGE_EMULATOR_HOST"] = proxy_url
        bucket = emu.new_bucket()
        with tempfile.TemporaryDirectory(prefix="lc-latency-") as tmp:
            asyncio.run(run(args, Path(tmp), f"gs://{bucket}"))
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        stop_emulator(emu)


if __name__ == "__main__":
    main()
