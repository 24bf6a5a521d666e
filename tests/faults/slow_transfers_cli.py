"""The real `lora-cloud` CLI, run in this process with its byte copies slowed down, so a fault
test can kill it (SIGKILL) while an upload or a download is under way, or hold it mid-way.

    python -m tests.faults.slow_transfers_cli SECONDS GATE dataset upload DIR --name x

Only the pace changes: the local storage copies in 64 KiB pieces and waits SECONDS before each
piece (so a download's partial file exists while it waits), and GCS waits SECONDS before each
upload or download. While the file GATE exists (``-``: no gate) each wait goes on, so a test
can keep the process mid-transfer, between requests, for as long as it needs. The rest is the
CLI as shipped.
"""

from __future__ import annotations

import sys
import time


def _slow_down(delay: float, gate: str) -> None:
    from pathlib import Path

    from comfy_lora_cloud.storage import gcs, local

    real_copy = local.copy_stream

    def wait() -> None:
        time.sleep(delay)
        while gate != "-" and Path(gate).exists():
            time.sleep(0.01)

    class _Trickle:
        def __init__(self, f):
            self.f = f

        def read(self, _n: int = -1) -> bytes:
            wait()
            return self.f.read(64 * 1024)

    local.copy_stream = lambda src, dst: real_copy(_Trickle(src), dst)

    for name in ("upload_file", "download_file"):
        real = getattr(gcs.GcsStorage, name)

        def slow(self, *args, _real=real, **kwargs):
            wait()
            return _real(self, *args, **kwargs)

        setattr(gcs.GcsStorage, name, slow)


def main() -> None:
    _slow_down(float(sys.argv[1]), sys.argv[2])
    from comfy_lora_cloud.cli.main import main as cli

    sys.argv = ["lora-cloud", *sys.argv[3:]]
    cli()


if __name__ == "__main__":
    main()
