"""Half-written files: never named like the file they become (ComfyUI lists a loras folder by
suffix), and removed later when the process that wrote them is gone or they are old."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_lora_cloud.storage.landing import PARTIAL, landing_file, partial_path, sweep_partials


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


def test_a_durable_batch_flushes_as_bytes_add_up_and_the_rest_at_finish(tmp_path):
    from comfy_lora_cloud.storage.landing import DurableBatch

    flushed: list[list[str]] = []
    batch = DurableBatch(every=100, flush=lambda paths: flushed.append([p.name for p in paths]))
    for i in range(5):
        batch.landed(tmp_path / f"f{i}", 40)
    batch.finish()
    assert flushed == [["f0", "f1", "f2"], ["f3", "f4"]]  # one flush at 120 bytes, the rest at the end
    batch.finish()
    assert len(flushed) == 2  # nothing new: nothing to flush


def test_a_flush_that_failed_is_raised_by_finish(tmp_path):
    from comfy_lora_cloud.storage.landing import DurableBatch

    def flush(paths: list[Path]) -> None:
        raise OSError(5, "Input/output error")

    batch = DurableBatch(every=10, flush=flush)
    batch.landed(tmp_path / "a", 50)  # flushed on a thread of its own
    with pytest.raises(OSError, match="Input/output"):
        batch.finish()


def test_make_durable_takes_files_that_went_missing(tmp_path):
    from comfy_lora_cloud.storage import landing

    kept = tmp_path / "kept"
    kept.write_bytes(b"x")
    landing.make_durable([kept, tmp_path / "gone"])  # syncfs on Linux
    if sys.platform.startswith("linux"):
        assert landing._syncfs() is not None
