"""Benchmark: planning a 10,000-file sync, cold and warm, against a plain list + walk + stat.
The same GCS emulator bucket (no proxy: planning is the client's work), interleaved
rounds, medians.

* baseline: ``storage.list(prefix)`` + ``os.walk`` + ``os.stat`` of every file (the least any
  planner must do);
* first upload, cold: nothing in the bucket under the prefix, no hash cache: ours hashes
  nothing (every file must go; the upload hashes what it sends);
* re-sync, warm: every file in the bucket, the hash cache knows them all: ours reads no file;
* re-sync, cold: every file in the bucket, no hash cache: ours must hash every file whose size
  matches (the only way to know it is unchanged), once; shown for honesty.

    .venv/bin/python benchmarks/planning.py [--files 10000] [--size 2048] [--rounds 3]

Target: at most 1.5x the baseline, cold (first upload) and warm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import make_files, timed  # noqa: E402
from comfy_lora_cloud.storage import sync  # noqa: E402
from comfy_lora_cloud.storage.gcs import GcsStorage  # noqa: E402
from tests.fixtures.gcs_emulator import start_emulator, stop_emulator  # noqa: E402


def baseline(storage: GcsStorage, src: Path, prefix: str) -> int:
    listed = storage.list(prefix).objects
    n = 0
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            n += 1
    return n + len(listed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    emu = start_emulator()
    if emu is None:
        sys.exit("gcp-storage-emulator is not installed")
    try:
        with tempfile.TemporaryDirectory(prefix="lc-plan-") as tmp:
            src = Path(tmp) / "src"
            make_files(src, args.files, args.size, name="img_{i:05}.jpg", folder="{f:03}")
            storage = GcsStorage(emu.new_bucket(), client=emu.client())
            t = time.perf_counter()
            sync.push(storage, src, "full/", workers=16)  # the bucket side of the re-sync cases
            print(f"{args.files} files x {args.size} bytes (seeded in {time.perf_counter() - t:.0f} s), "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
            warm = sync.HashCache(Path(tmp) / "warm.json")
            sync.plan_push(storage, src, "full/", cache=warm)
            warm.save()
            s: dict[str, list[float]] = {k: [] for k in ("base_empty", "cold_first", "base_full", "warm", "cold_full")}
            for _ in range(args.rounds):
                s["base_empty"].append(timed(lambda: baseline(storage, src, "empty/")))
                s["cold_first"].append(timed(lambda: sync.plan_push(storage, src, "empty/", cache=sync.HashCache())))
                s["base_full"].append(timed(lambda: baseline(storage, src, "full/")))
                s["warm"].append(timed(lambda: sync.plan_push(storage, src, "full/",
                                                              cache=sync.HashCache(warm.path))))
                s["cold_full"].append(timed(lambda: sync.plan_push(storage, src, "full/", cache=sync.HashCache())))
            plan = sync.plan_push(storage, src, "full/", cache=sync.HashCache(warm.path))
            assert len(plan.skips) == args.files and not plan.transfers
            m = {k: statistics.median(v) for k, v in s.items()}
            print(f"  baseline, empty prefix (list + walk + stat)   {m['base_empty']:6.3f} s")
            print(f"  ours, first upload, cold                      {m['cold_first']:6.3f} s   "
                  f"{m['cold_first'] / m['base_empty']:4.2f}x the baseline")
            print(f"  baseline, full prefix                         {m['base_full']:6.3f} s")
            print(f"  ours, re-sync, warm hash cache                {m['warm']:6.3f} s   "
                  f"{m['warm'] / m['base_full']:4.2f}x the baseline")
            print(f"  ours, re-sync, cold hash cache (hashes all)   {m['cold_full']:6.3f} s   "
                  f"{m['cold_full'] / m['base_full']:4.2f}x the baseline")
            ok = m["cold_first"] / m["base_empty"] <= 1.5 and m["warm"] / m["base_full"] <= 1.5
            print(f"target (<= 1.5x the baseline, cold first upload and warm re-sync): {'MET' if ok else 'NOT MET'}")
    finally:
        stop_emulator(emu)


if __name__ == "__main__":
    main()
