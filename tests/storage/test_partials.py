"""Half-written files: never named like the file they become (ComfyUI lists a loras folder by
suffix), and removed later when the process that wrote them is gone or they are old."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_lora_cloud.storage.base import PARTIAL, landing_file, partial_path, sweep_partials


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_partial_name_is_hidden_and_does_not_end_in_the_real_suffix(tmp_path):
    p = partial_path(tmp_path / "cat.safetensors")
    assert p.parent == tmp_path and p.name.startswith(PARTIAL) and not p.name.endswith(".safetensors")
    assert str(os.getpid()) in p.name and "cat.safetensors" in p.name


def test_failed_landing_leaves_nothing(tmp_path):
    dest = tmp_path / "cat.safetensors"
    with pytest.raises(RuntimeError):
        with landing_file(dest) as f:
            f.write(b"half")
            raise RuntimeError("connection dropped")
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_partials_of_dead_writers_and_old_ones_only(tmp_path):
    dead = tmp_path / f"{PARTIAL}-{_dead_pid()}-1.a.safetensors.part"
    legacy = tmp_path / f"{PARTIAL}.{_dead_pid()}.1.b.safetensors"  # the name before .part
    live = partial_path(tmp_path / "c.safetensors")  # this process: still writing it
    old_live = tmp_path / f"{PARTIAL}-{os.getpid()}-2.d.safetensors.part"
    keep = tmp_path / "e.safetensors"
    for p in (dead, legacy, live, old_live, keep):
        p.write_bytes(b"x")
    os.utime(old_live, (1, 1))
    removed = sweep_partials(tmp_path)
    assert sorted(p.name for p in removed) == sorted([dead.name, legacy.name, old_live.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, keep.name])
    assert sweep_partials(tmp_path / "missing") == []


def test_sweep_by_age_uses_the_given_clock(tmp_path):
    p = partial_path(tmp_path / "c.safetensors")
    p.write_bytes(b"x")
    mtime = p.stat().st_mtime
    assert sweep_partials(tmp_path, stale_s=60, clock=lambda: mtime + 59) == []
    assert sweep_partials(tmp_path, stale_s=60, clock=lambda: mtime + 61) == [Path(p)]
