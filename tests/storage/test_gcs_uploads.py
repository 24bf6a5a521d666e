"""Uploads at least as fast as transfer_manager: one request for a file up to a chunk,
with its checksums in the request; chunks above; the file read once. Counted in the requests
the real client sends to the emulator, not in seconds."""

from __future__ import annotations

import os
import threading

import pytest

from comfy_lora_cloud.errors import ChecksumMismatch
from comfy_lora_cloud.storage import sync
from comfy_lora_cloud.storage.base import checksum_bytes, checksum_file
from comfy_lora_cloud.storage.gcs import GcsStorage
from comfy_lora_cloud.storage.gcs_errors import make_retry
from comfy_lora_cloud.storage.gcs_upload import CHUNK_SIZE, MemoryBudget
from tests.contract.gcs_transports import InterceptingAdapter, Sent, session_with


def gcs(emu, bucket, adapter, **kw) -> GcsStorage:
    return GcsStorage(bucket, "pre", client=emu.client(session_with(adapter)),
                      retry=make_retry(initial=0.001, maximum=0.01, timeout=10), **kw)


def uploads(adapter: InterceptingAdapter) -> list[tuple[str, str | None]]:
    return [(h.method, h.query.get("uploadType")) for h in adapter.history
            if "/o" in h.path.split("/b/", 1)[-1] and h.method in ("POST", "PUT")]


def test_a_20_mb_file_goes_in_one_request_with_its_checksum(gcs_env, gcs_bucket, tmp_path):
    adapter = InterceptingAdapter()
    s = gcs(gcs_env, gcs_bucket, adapter)
    data = os.urandom(20 * 1000 * 1000)
    (tmp_path / "w").write_bytes(data)
    info = s.upload_file(tmp_path / "w", "loras/w.safetensors")
    assert uploads(adapter) == [("POST", "media")]  # the client alone: POST + 3 PUTs of 8 MiB
    local = checksum_bytes(data)
    [post] = [h for h in adapter.history if h.query.get("uploadType") == "media"]
    assert post.body == data  # the bytes alone, no MIME wrapping
    hashes = dict(part.split("=", 1) for part in post.headers["X-Goog-Hash"].split(","))
    assert hashes["crc32c"] == local.crc32c  # hashed once, as read; md5 is what GCS computes and reports
    assert (info.size, info.md5, info.crc32c) == (local.size, local.md5, local.crc32c)
    assert s.read_bytes("loras/w.safetensors") == data


def test_above_a_chunk_it_is_resumable_and_the_file_is_hashed_as_it_is_sent(gcs_env, gcs_bucket, tmp_path):
    adapter = InterceptingAdapter()
    s = gcs(gcs_env, gcs_bucket, adapter, chunk_size=1024 * 1024)  # one request up to 8 MiB still
    data = os.urandom(9 * 1024 * 1024 + 5)
    (tmp_path / "w").write_bytes(data)
    info = s.upload_file(tmp_path / "w", "big.bin")  # no checksums given: computed while reading
    assert [m for m, _ in uploads(adapter)] == ["POST"] + ["PUT"] * 10  # a session, then 1 MiB chunks
    assert info.md5 == checksum_bytes(data).md5
    assert s.read_bytes("big.bin") == data


def test_a_file_written_to_during_a_resumable_upload_is_not_kept(gcs_env, gcs_bucket, tmp_path):
    path = tmp_path / "w"
    path.write_bytes(os.urandom(9 * 1024 * 1024))

    def scribble(sent: Sent):
        if sent.method == "PUT" and sum(h.method == "PUT" for h in adapter.history) == 3:
            with open(path, "r+b") as f:  # same size, other bytes, later mtime
                f.seek(8 * 1024 * 1024)
                f.write(b"changed!")
            os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
        return None

    adapter = InterceptingAdapter(scribble)
    s = gcs(gcs_env, gcs_bucket, adapter, chunk_size=1024 * 1024)
    with pytest.raises(ChecksumMismatch, match="changed while it was being uploaded"):
        s.upload_file(path, "w.bin")
    assert not s.exists("w.bin")


def test_a_plan_whose_file_changed_size_is_refused_before_sending(gcs_env, gcs_bucket, tmp_path):
    adapter = InterceptingAdapter()
    s = gcs(gcs_env, gcs_bucket, adapter)
    (tmp_path / "f").write_bytes(b"old bytes")
    planned = checksum_file(tmp_path / "f")
    (tmp_path / "f").write_bytes(b"new, longer bytes")
    with pytest.raises(ChecksumMismatch):
        s.upload_file(tmp_path / "f", "f", checksums=planned)
    assert uploads(adapter) == []


def test_a_plan_whose_file_changed_bytes_is_deleted_again(gcs_env, gcs_bucket, tmp_path):
    adapter = InterceptingAdapter()
    s = gcs(gcs_env, gcs_bucket, adapter)
    (tmp_path / "f").write_bytes(b"old bytes")
    planned = checksum_file(tmp_path / "f")
    (tmp_path / "f").write_bytes(b"new bytes")  # same size
    with pytest.raises(ChecksumMismatch):  # the emulator refuses it as GCS does, or we delete it
        s.upload_file(tmp_path / "f", "f", checksums=planned)
    assert not s.exists("f")


def test_push_of_new_files_reads_each_file_once(gcs_env, gcs_bucket, tmp_path, monkeypatch):
    """Planning a first upload hashes nothing (nothing to compare with); the upload hashes the
    bytes it sends, and the hash cache learns them for the next plan."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.png").write_bytes(os.urandom(1000 + i))
    opened: list[str] = []
    real_open = open

    def counting_open(file, mode="r", *a, **kw):
        if "b" in mode and "r" in mode and str(file).startswith(str(src)):
            opened.append(str(file))
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", counting_open)
    s = gcs(gcs_env, gcs_bucket, InterceptingAdapter())
    cache = sync.HashCache(tmp_path / "cache.json")
    result = sync.push(s, src, "ds/", cache=cache)
    assert result.files == 5 and sorted(opened) == sorted(str(p) for p in src.iterdir())
    opened.clear()
    again = sync.push(s, src, "ds/", cache=sync.HashCache(tmp_path / "cache.json"))
    assert again.files == 0 and opened == []  # the cache knew every file: nothing read at all


def test_memory_budget_bounds_what_is_held_at_once():
    budget = MemoryBudget(100)
    held, peak, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(4)

    def hold(n: int) -> None:
        barrier.wait()
        with budget.reserve(n):
            with lock:
                held[0] += n
                peak[0] = max(peak[0], held[0])
            with lock:
                held[0] -= n

    threads = [threading.Thread(target=hold, args=(60,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] <= 100 and budget.used == 0
    assert CHUNK_SIZE % (256 * 1024) == 0


def test_an_upload_gcs_reports_with_other_bytes_is_deleted(gcs_env, gcs_bucket, tmp_path):
    """The crc32c hashed while reading is compared with what GCS says it stored."""
    import json

    from tests.contract.gcs_transports import Reply

    def lie(sent: Sent, reply: Reply) -> Reply:
        if sent.query.get("uploadType") == "media" and reply.status == 200:
            meta = json.loads(reply.body)
            meta["crc32c"] = "AAAAAA=="
            return Reply(200, json.dumps(meta).encode(), reply.headers)
        return reply

    s = gcs(gcs_env, gcs_bucket, InterceptingAdapter(after=lie))
    (tmp_path / "f").write_bytes(os.urandom(5000))
    with pytest.raises(ChecksumMismatch, match="deleted"):
        s.upload_file(tmp_path / "f", "f.bin")
    assert not s.exists("f.bin")
