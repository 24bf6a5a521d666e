"""The kohya child process as the trainer sees it: the environment it gets (none of our
secrets), its output read as it comes, and killing it with everything it started."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
from pathlib import Path
from typing import Mapping

# never handed to kohya: it needs none of them
SECRET_ENV = ("CONTAINER_API_KEY", "HF_TOKEN", "LORA_CLOUD_HF_TOKEN", "VAST_API_KEY", "LORA_CLOUD_VAST_API_KEY",
              "LORA_CLOUD_GCS_SERVICE_ACCOUNT_JSON", "GOOGLE_APPLICATION_CREDENTIALS")


def kohya_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without our secrets, with Python's output unbuffered (progress arrives as printed)."""
    out = {k: v for k, v in env.items() if k not in SECRET_ENV}
    out.setdefault("PYTHONUNBUFFERED", "1")
    return out


def pump_output(stream, out: "queue.Queue[str | None]") -> None:
    """Read the child's output as it comes (tqdm never ends its lines) into ``out``; None last."""
    try:
        while True:
            data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(4096)
            if not data:
                break
            out.put(data.decode("utf-8", errors="replace"))
    finally:
        out.put(None)


def kill_tree(proc: subprocess.Popen) -> None:
    """kohya does not handle SIGTERM and ``accelerate launch`` starts it as a child:
    SIGKILL the whole tree. kohya stays in the trainer's process group on purpose, so whatever
    kills the trainer's group (a container stop, the local provider's destroy) kills kohya too."""
    for pid in [*_descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (Linux /proc; nothing elsewhere), deepest last."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parent_of[int(entry.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        children = [p for p, pp in parent_of.items() if pp in frontier]
        found.extend(children)
        frontier = children
    return found
