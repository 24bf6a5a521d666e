"""What the benchmarks share: test trees, a stopwatch, and the latency proxy in its own process.

Imported as ``benchmarks.common`` once a benchmark has put the repository root on ``sys.path``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def make_files(root: Path, n: int, size: int, name: str = "f_{i:04}.bin", folder: str = "{f:02}") -> list[Path]:
    """``n`` files of ``size`` random bytes below ``root``, 100 to a folder (``folder`` and
    ``name`` are formats of the folder number ``f`` and the file number ``i``)."""
    out = []
    for i in range(n):
        p = root / folder.format(f=i // 100) / name.format(i=i)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
        out.append(p)
    return out


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def start_proxy(target_url: str, delay_ms: float) -> tuple[subprocess.Popen, str]:
    """:mod:`benchmarks.latency_proxy` in front of ``target_url``, in its own process (it takes no
    GIL time from the client); returns the process and the proxy's URL."""
    proxy = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "latency_proxy.py"),
                              target_url.split("//")[1], "--delay-ms", str(delay_ms)],
                             stdout=subprocess.PIPE, text=True)
    assert proxy.stdout is not None
    return proxy, f"http://127.0.0.1:{int(proxy.stdout.readline())}"
