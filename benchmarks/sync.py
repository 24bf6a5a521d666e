"""Benchmark: push 1,000 files of 100 KB with our sync vs. a plain sequential loop, then re-sync.

Both sides use the same real ``storage.Client`` against gcp-storage-emulator, once directly and
once through :mod:`benchmarks.latency_proxy` (30 ms per request, like a laptop to a GCS region;
the emulator itself is single-threaded and CPU-bound, unlike a real bucket). A fresh emulator per
mode keeps the runs independent. Not a test: it prints figures.

    .venv/bin/python benchmarks/sync.py [--files 1000] [--size 102400] [--workers 8] [--delay-ms 30]

Targets with the proxy: our push >= 4x faster than the loop; re-sync moves 0 bytes in < 2 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import make_files, start_proxy  # noqa: E402
from comfy_lora_cloud.storage import sync  # noqa: E402
from comfy_lora_cloud.storage.gcs import GcsStorage  # noqa: E402
from tests.fixtures.gcs_emulator import start_emulator, stop_emulator  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(label: str, src: Path, files: list[Path], workers: int, delay: float | None) -> dict[str, float]:
    emu = start_emulator()
    if emu is None:
        sys.exit("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
    proxy = None
    try:
        url = emu.url
        if delay is not None:  # its own process, so it takes no GIL time from the client
            proxy, url = start_proxy(emu.url, delay * 1000)
        os.environ["STORAGE_EMULATOR_HOST"] = url
        emu.url = url  # the client below goes through the proxy
        bucket = emu.new_bucket()
        client = emu.client()

        pid = emu.process.pid
        cpu0, t = cpu_seconds(pid), time.perf_counter()
        b = client.bucket(bucket)
        for p in files:  # the baseline: what a plain script would do
            b.blob("loop/" + p.relative_to(src).as_posix()).upload_from_filename(str(p))
        loop_s, loop_cpu = time.perf_counter() - t, cpu_seconds(pid) - cpu0

        storage = GcsStorage(bucket, client=client)
        cpu0, t = cpu_seconds(pid), time.perf_counter()
        first = sync.push(storage, src, "ours/", workers=workers)
        ours_s, ours_cpu = time.perf_counter() - t, cpu_seconds(pid) - cpu0
        assert first.files == len(files), first
        assert len(storage.list("ours/").objects) == len(files)

        t = time.perf_counter()
        again = sync.push(storage, src, "ours/", workers=workers)
        resync_s = time.perf_counter() - t

        cache = sync.HashCache(Path(tempfile.mkdtemp()) / "hash-cache.json")
        sync.plan_push(storage, src, "ours/", cache=cache)  # warm the cache
        cache.save()
        t = time.perf_counter()
        cached = sync.push(storage, src, "ours/", workers=workers, cache=sync.HashCache(cache.path))
        cached_s = time.perf_counter() - t

        print(f"\n== {label} ==")
        print(f"sequential loop (upload_from_filename): {loop_s:7.2f} s  ({len(files) / loop_s:6.0f} files/s)"
              f"  emulator CPU {loop_cpu:.1f} s")
        print(f"our sync push, {workers:2} workers:         {ours_s:7.2f} s  ({len(files) / ours_s:6.0f} files/s)"
              f"  emulator CPU {ours_cpu:.1f} s")
        print(f"ratio loop/ours:                        {loop_s / ours_s:7.2f} x")
        print(f"re-sync unchanged tree:                 {again.bytes} bytes, {again.files} files, {resync_s:.2f} s")
        print(f"re-sync with a warm hash cache:         {cached.bytes} bytes, {cached.files} files, {cached_s:.2f} s")
        return {"loop": loop_s, "ours": ours_s, "resync": resync_s, "resync_bytes": again.bytes}
    finally:
        if proxy:
            proxy.terminate()
            proxy.wait(timeout=10)
        stop_emulator(emu)
        os.environ.pop("STORAGE_EMULATOR_HOST", None)


def main() -> None:
    ap = argparse.ArgumentParser(description="sync benchmark against gcp-storage-emulator")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--size", type=int, default=100 * 1024)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--delay-ms", type=float, default=30.0)
    ap.add_argument("--only", choices=["direct", "proxy"], default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        files = make_files(src, args.files, args.size, name="img_{i:04}.bin")
        print(f"{args.files} files x {args.size} bytes, workers={args.workers}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        results = {}
        if args.only in (None, "direct"):
            results["direct"] = run_mode("emulator, direct", src, files, args.workers, None)
        if args.only in (None, "proxy"):
            results["proxy"] = run_mode(f"emulator + {args.delay_ms:.0f} ms/request proxy", src, files,
                                        args.workers, args.delay_ms / 1000)
        if "proxy" in results:
            r = results["proxy"]
            ok = r["loop"] / r["ours"] >= 4 and r["resync_bytes"] == 0 and r["resync"] < 2
            print(f"load average now {os.getloadavg()[0]:.1f}")
            print(f"targets with the proxy (>= 4x, re-sync 0 bytes in < 2 s): {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
