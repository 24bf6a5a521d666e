"""Benchmark: how long the `lora-cloud` CLI takes to start, against a bare interpreter.

Interleaved rounds of: ``python -c pass`` (the floor), ``lora-cloud --help``, ``lora-cloud
dataset list`` over a local bucket of 20 datasets (settings, storage and the listing: a real
command's imports). Medians of wall time, and what each adds to the bare interpreter.

    .venv/bin/python benchmarks/cli_start.py [--rounds 15]

Target: ``--help`` under 0.15 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    from comfy_lora_cloud.storage import LocalStorage, layout

    with tempfile.TemporaryDirectory(prefix="lc-cli-") as tmp:
        bucket = LocalStorage(Path(tmp) / "bucket")
        for i in range(20):
            bucket.write_bytes(layout.dataset_prefix(f"ds{i:02}") + "001.png", b"png")
            bucket.write_bytes(layout.dataset_prefix(f"ds{i:02}") + layout.MANIFEST, json.dumps({"trigger": "t"}).encode())
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_CLOUD_HOME": str(Path(tmp) / "home"),
               "LORA_CLOUD_STORAGE": str(Path(tmp) / "bucket")}
        cli = [sys.executable, "-m", "comfy_lora_cloud.cli.main"]
        cases = {"python -c pass": [sys.executable, "-c", "pass"], "lora-cloud --help": cli + ["--help"],
                 "lora-cloud dataset list": cli + ["dataset", "list"]}
        samples: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for name, cmd in cases.items():
                samples[name].append(timed(cmd, env))
    med = {k: statistics.median(v) for k, v in samples.items()}
    bare = med["python -c pass"]
    print(f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, m in med.items():
        print(f"  {name:26s} {m:6.3f} s   {m / bare:5.1f}x bare, +{m - bare:6.3f} s")
    print(f"target (--help under 0.15 s): {'MET' if med['lora-cloud --help'] < 0.15 else 'NOT MET'}")


if __name__ == "__main__":
    main()
