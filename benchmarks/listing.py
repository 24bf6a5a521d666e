"""Benchmark: listing 10 / 100 / 1,000 datasets through a 30 ms-per-request proxy.

Each dataset holds two images, one caption and its manifest (4 objects). Measured in one run,
interleaved, on the same bucket and the same real ``storage.Client``:

* ``old``: what ``dataset list`` did before: one listing, then ``stat`` + read of every manifest,
  one after the other (two requests per dataset);
* ``flat``: a bare listing of ``datasets/`` and nothing else (the floor: no manifest read at all);
* ``ours cold``: :func:`library.list_datasets` for the first page (100, what the route and the
  CLI show), its manifests read in parallel, nothing remembered yet;
* ``ours warm``: the same again: manifests remembered by generation, so one listing only;
* ``ours all``: every dataset (``--all``), cold.

    .venv/bin/python benchmarks/listing.py [--sizes 10,100,1000] [--delay-ms 30] [--rounds 3]

Targets: 1,000 datasets in under 1 s (ours cold), and from 100 to 1,000 the cost grows by
less than 3x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfy_lora_cloud.service import library  # noqa: E402
from comfy_lora_cloud.service.library import manifests  # noqa: E402
from comfy_lora_cloud.service.library.listings import Page, RecordCache  # noqa: E402
from comfy_lora_cloud.service.library import listings
from comfy_lora_cloud.storage import layout  # noqa: E402
from comfy_lora_cloud.storage.gcs import GcsStorage  # noqa: E402
from benchmarks.common import start_proxy, timed  # noqa: E402
from tests.fixtures.gcs_emulator import GcsEmulator, start_emulator, stop_emulator  # noqa: E402


def seed(storage: GcsStorage, n: int) -> None:
    def one(i: int) -> None:
        prefix = layout.dataset_prefix(f"ds{i:04}")
        storage.write_bytes(prefix + "001.png", b"\x89PNG fake")
        storage.write_bytes(prefix + "001.txt", b"a photo of sks")
        storage.write_bytes(prefix + "002.png", b"\x89PNG fake")
        storage.write_bytes(prefix + layout.MANIFEST, json.dumps({"trigger": "sks", "lora_type": "style"}).encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def old_list(storage: GcsStorage) -> int:
    """The old way: one listing, then a stat and a read per manifest, in sequence."""
    names = set()
    for o in storage.list(layout.DATASETS).objects:
        name, sep, _ = o.key[len(layout.DATASETS):].partition("/")
        if sep:
            names.add(name)
    for name in sorted(names):
        manifests.manifest_fields(storage, layout.dataset_prefix(name) + layout.MANIFEST)
    return len(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--delay-ms", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--old-rounds", type=int, default=1, help="rounds of the slow old path (1,000: ~70 s)")
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    emu = start_emulator()
    if emu is None:
        sys.exit("gcp-storage-emulator is not installed")
    proxy, proxy_url = start_proxy(emu.url, args.delay_ms)
    print(f"datasets of 4 objects, {args.delay_ms:.0f} ms/request proxy, workers={args.workers}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results: dict[int, dict[str, float]] = {}
    try:
        direct = emu.client()
        for n in sizes:
            bucket = emu.new_bucket()
            seed(GcsStorage(bucket, client=direct), n)
            storage = GcsStorage(bucket, client=GcsEmulator(proxy_url, emu.process).client())
            page = Page(0, 100)
            samples: dict[str, list[float]] = {k: [] for k in ("old", "flat", "cold", "warm", "all")}
            for r in range(args.rounds):  # interleaved: each round runs every variant once
                if r < args.old_rounds:
                    samples["old"].append(timed(lambda: old_list(storage)))
                samples["flat"].append(timed(lambda: storage.list(layout.DATASETS)))
                listings.RECORDS = RecordCache()  # nothing remembered: a first listing
                samples["cold"].append(timed(lambda: library.list_datasets(storage, page, workers=args.workers)))
                samples["warm"].append(timed(lambda: library.list_datasets(storage, page, workers=args.workers)))
                listings.RECORDS = RecordCache()
                samples["all"].append(timed(lambda: library.list_datasets(storage, Page(), workers=args.workers)))
            found = library.list_datasets(storage, page)
            assert found.total == n and len(found.items) == min(n, 100) and found.items[0].trigger == "sks"
            med = {k: statistics.median(v) for k, v in samples.items() if v}
            results[n] = med
            print(f"\n== {n} datasets ==")
            for k, label in (("old", "old: listing + stat/read each, sequential"), ("flat", "bare flat listing"),
                             ("cold", "ours, first page (100), cold"), ("warm", "ours, first page, warm"),
                             ("all", "ours, every dataset, cold")):
                if k in med:
                    print(f"  {label:44s} {med[k]:7.3f} s")
            if "old" in med:
                print(f"  ratio old / ours cold:                      {med['old'] / med['cold']:7.1f} x")
                print(f"  ratio old / ours all:                       {med['old'] / med['all']:7.1f} x")
            print(f"  ratio ours cold / bare flat listing:        {med['cold'] / med['flat']:7.2f} x")
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        stop_emulator(emu)
    if 100 in results and 1000 in results:
        growth = results[1000]["cold"] / results[100]["cold"]
        ok = results[1000]["cold"] < 1.0 and growth < 3
        print(f"\n1,000 datasets, ours cold: {results[1000]['cold']:.3f} s (target < 1 s); 100 -> 1,000 grows "
              f"{growth:.2f}x (target < 3x): {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
