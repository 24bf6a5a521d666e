"""Benchmark: push and pull against google-cloud-storage's ``transfer_manager`` and ``gcsfs``,
on the same emulator behind the same 30 ms-per-request proxy.

Two cases: 1,000 files of 50 KB and 20 files of 20 MB. Each round starts a fresh emulator and
proxy, then runs every tool in turn (the order rotates from round to round), each into its own
bucket prefix: first upload, then download into an empty folder. Ours also re-syncs the
unchanged tree (what moves: 0 bytes). Medians over the rounds, and ratios against the faster
baseline of each column; beside each time, the CPU this process spent on it.

* ours: :func:`comfy_lora_cloud.storage.sync.push` / ``pull`` with the pack's default 16
  workers. Uploads of files under 1 MiB keep up to 64 requests in flight (threads, the
  connection pool's size); downloads of them up to 128 GETs on one event loop
  (``GcsStorage.fetch_many``), each landed through a temporary file and a rename and made
  durable in batches (one ``syncfs`` per 16 MiB, on a thread, and one at the end); large files
  go 16 at once, each fsynced. Checksums are verified both ways;
* ``transfer_manager``: ``upload_many_from_filenames`` / ``download_many_to_path`` with 64
  threads for small files and 16 for large (its default, 8 processes, was slower here, and
  so were 128 threads);
* ``gcsfs``: ``put`` / ``get`` recursive (asyncio, its own concurrency).

Needs the ``bench`` extra (gcsfs). Without installing it into the project's venv:

    pip install --target .bench-libs gcsfs        # appended to sys.path below, so it shadows nothing
    .venv/bin/python benchmarks/transfers.py [--rounds 3] [--delay-ms 30] [--only small|large]

Targets: first upload and first download at least 1.0x the faster of the two; re-sync 0 bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / ".bench-libs"))  # last: only what the venv lacks (gcsfs) comes from there
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # else a 60 s gRPC probe per bucket

from benchmarks.common import make_files, start_proxy  # noqa: E402
from comfy_lora_cloud.storage import sync  # noqa: E402
from comfy_lora_cloud.storage.gcs import GcsStorage  # noqa: E402
from comfy_lora_cloud.storage.gcs_client import POOL_SIZE  # noqa: E402
from tests.fixtures.gcs_emulator import GcsEmulator, start_emulator, stop_emulator  # noqa: E402

WORKERS = 16
CASES = {"small": (1000, 50 * 1000), "large": (20, 20 * 1000 * 1000)}


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


class World:
    """A fresh emulator behind a fresh proxy, for one round."""

    def __init__(self, delay_ms: float):
        self.emu = start_emulator()
        if self.emu is None:
            sys.exit("gcp-storage-emulator is not installed")
        self.proxy, self.url = start_proxy(self.emu.url, delay_ms)
        self.bucket = self.emu.new_bucket()
        self.client = GcsEmulator(self.url, self.emu.process).client()

    def close(self) -> None:
        self.proxy.terminate()
        self.proxy.wait(timeout=10)
        stop_emulator(self.emu)


class Clock:
    """Wall time and this process's CPU time (all its threads) of a block: where every tool
    reaches the harness's own limit (the proxy moves about 1 GB/s), the CPU a client spends
    is what still tells them apart."""

    def __enter__(self) -> "Clock":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def times(self, name: str) -> dict[str, float]:
        return {name: self.wall, f"{name}_cpu": self.cpu}


def run_ours(w: World, src: Path, dst: Path) -> dict[str, float]:
    from requests.adapters import HTTPAdapter

    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)  # what make_client does for the pack
    w.client._http.mount("http://", adapter)
    storage = GcsStorage(w.bucket, client=w.client)
    with Clock() as up_t:
        up = sync.push(storage, src, "ours/", workers=WORKERS)
    with Clock() as down_t:
        down = sync.pull(storage, "ours/", dst, workers=WORKERS)
    with Clock() as again_t:
        again = sync.push(storage, src, "ours/", workers=WORKERS)
    assert up.files == down.files == count_files(dst), (up, down)
    return {**up_t.times("up"), **down_t.times("down"), "resync": again_t.wall, "resync_bytes": again.bytes}


def in_flight(src: Path) -> int:
    """How many requests ours keeps in flight for this tree's uploads (transfer_manager's threads)."""
    small = any(p.stat().st_size < sync.SMALL_FILE for p in src.rglob("*") if p.is_file())
    return min(WORKERS * sync.SMALL_FANOUT, POOL_SIZE) if small else WORKERS


def run_tm(w: World, src: Path, dst: Path) -> dict[str, float]:
    from google.cloud.storage import transfer_manager as tm
    from requests.adapters import HTTPAdapter

    w.client._http.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE))
    bucket = w.client.bucket(w.bucket)
    names = [p.relative_to(src).as_posix() for p in sorted(src.rglob("*")) if p.is_file()]
    threads = in_flight(src)
    with Clock() as up_t:
        results = tm.upload_many_from_filenames(bucket, names, source_directory=str(src), blob_name_prefix="tm/",
                                                worker_type=tm.THREAD, max_workers=threads, raise_exception=True)
    assert all(r is None for r in results)
    with Clock() as down_t:
        tm.download_many_to_path(bucket, names, destination_directory=str(dst), blob_name_prefix="tm/",
                                 worker_type=tm.THREAD, max_workers=threads, raise_exception=True)
    assert count_files(dst) == len(names)
    return {**up_t.times("up"), **down_t.times("down")}


def run_gcsfs(w: World, src: Path, dst: Path) -> dict[str, float]:
    import gcsfs

    fs = gcsfs.GCSFileSystem(endpoint_url=w.url, token="anon", project="bench", skip_instance_cache=True)
    with Clock() as up_t:
        fs.put(str(src) + "/", f"{w.bucket}/gcsfs/", recursive=True)
    with Clock() as down_t:
        fs.get(f"{w.bucket}/gcsfs/", str(dst) + "/", recursive=True)
    assert count_files(dst) == count_files(src), (count_files(dst), count_files(src))
    return {**up_t.times("up"), **down_t.times("down")}


TOOLS = {"ours": run_ours, "transfer_manager": run_tm, "gcsfs": run_gcsfs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delay-ms", type=float, default=30.0)
    ap.add_argument("--only", choices=sorted(CASES))
    ap.add_argument("--tools", default=",".join(TOOLS))
    args = ap.parse_args()
    tools = args.tools.split(",")
    print(f"{args.delay_ms:.0f} ms/request proxy, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    verdicts = []
    for case, (n, size) in CASES.items():
        if args.only and case != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="lc-bench-") as tmp:
            src = Path(tmp) / "src"
            make_files(src, n, size)
            samples: dict[str, dict[str, list[float]]] = {t: {} for t in tools}
            for r in range(args.rounds):
                order = tools[r % len(tools):] + tools[:r % len(tools)]
                w = World(args.delay_ms)
                try:
                    for tool in order:
                        dst = Path(tmp) / f"dst-{tool}-{r}"
                        got = TOOLS[tool](w, src, dst)
                        for k, v in got.items():
                            samples[tool].setdefault(k, []).append(v)
                        shutil.rmtree(dst, ignore_errors=True)
                finally:
                    w.close()
            med = {t: {k: statistics.median(v) for k, v in s.items()} for t, s in samples.items()}
            print(f"\n== {n} files x {size / 1e6:g} MB ==")
            for tool in tools:
                m = med[tool]
                extra = (f"   re-sync {m['resync']:.2f} s, {int(m['resync_bytes'])} bytes" if "resync" in m else
                         "   (re-sends everything)")
                print(f"  {tool:17s} upload {m['up']:6.2f} s (CPU {m['up_cpu']:.2f} s)   "
                      f"download {m['down']:6.2f} s (CPU {m['down_cpu']:.2f} s){extra}")
            others = [t for t in tools if t != "ours"]
            if "ours" in med and others:
                best_up = min(med[t]["up"] for t in others)
                best_down = min(med[t]["down"] for t in others)
                r_up, r_down = best_up / med["ours"]["up"], best_down / med["ours"]["down"]
                print(f"  ours vs the faster baseline: upload {r_up:.2f}x, download {r_down:.2f}x (>1: ours faster)")
                verdicts.append(r_up >= 1.0 and r_down >= 1.0 and med["ours"]["resync_bytes"] == 0)
    if verdicts:
        print(f"\ntargets (>= 1.0x the faster baseline both ways, re-sync 0 bytes): "
              f"{'MET' if all(verdicts) else 'NOT MET'}")


if __name__ == "__main__":
    main()
