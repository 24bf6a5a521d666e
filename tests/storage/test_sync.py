"""Sync behaviour beyond the contract: symlinks, progress, parallelism, the hash cache, deletes."""

from __future__ import annotations

import os
import threading

import pytest

from comfy_lora_cloud.errors import ConfigError, StorageError
from comfy_lora_cloud.storage import sync
from comfy_lora_cloud.storage.base import checksum_file
from comfy_lora_cloud.storage.local import LocalStorage
from tests.contract.storage_contract import TREE, CountingStorage, make_tree, read_tree


@pytest.fixture
def store(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "bucket")


def test_symlinks_inside_are_followed_and_leaving_ones_skipped(store, tmp_path):
    src = tmp_path / "src"
    make_tree(src, {"a.txt": b"a", "sub/b.txt": b"b"})
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"do not upload")
    (src / "leak.txt").symlink_to(outside)
    (src / "alias.txt").symlink_to(src / "a.txt")
    (src / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    (src / "dangling").symlink_to(tmp_path / "nothing")
    plan = sync.plan_push(store, src, "d/")
    assert sorted(t.rel for t in plan.uploads) == ["a.txt", "alias.txt", "sub/b.txt"]
    sync.apply(plan, store)
    assert store.read_bytes("d/alias.txt") == b"a"
    assert not store.exists("d/leak.txt")


def test_progress_reports_every_file_and_ends_at_the_total(store, tmp_path):
    src = tmp_path / "src"
    make_tree(src, TREE)
    events: list[sync.Progress] = []
    lock = threading.Lock()

    def on_progress(p: sync.Progress) -> None:
        with lock:
            events.append(p)

    result = sync.push(store, src, "d/", workers=3, progress=on_progress)
    total = sum(map(len, TREE.values()))
    assert result.bytes == total and result.files == len(TREE)
    assert len(events) == len(TREE)
    assert sorted(e.rel for e in events) == sorted(TREE)
    assert sorted(e.bytes_done for e in events) == [e.bytes_done for e in sorted(events, key=lambda e: e.files_done)]
    last = max(events, key=lambda e: e.files_done)
    n = len(TREE)
    assert (last.bytes_done, last.bytes_total, last.files_done, last.files_total) == (total, total, n, n)


class BarrierStorage(CountingStorage):
    """Makes the first ``n`` uploads wait for each other: passes only if ``n`` run at once."""

    def __init__(self, inner, n: int):
        super().__init__(inner)
        self.barrier = threading.Barrier(n, timeout=30)
        self.in_flight = 0
        self.peak = 0
        self.started = 0
        self.lock = threading.Lock()

    def upload_file(self, *args, **kwargs):
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            first = self.started < self.barrier.parties
            self.started += 1
        try:
            if first:
                self.barrier.wait()  # BrokenBarrierError (after 30 s) if they never overlap
            return self.inner.upload_file(*args, **kwargs)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_transfers_run_in_parallel_but_bounded(store, tmp_path):
    src = tmp_path / "src"
    make_tree(src, {f"f{i:02}.bin": bytes([i]) * 100 for i in range(12)})
    wrapped = BarrierStorage(store, 3)
    sync.push(wrapped, src, "d/", workers=3)
    assert not wrapped.barrier.broken  # the first three uploads really overlapped
    assert wrapped.peak == 3  # and never more than the bound
    assert len(store.list("d/").objects) == 12


def test_hash_cache_skips_rehashing_unchanged_files(store, tmp_path):
    src = tmp_path / "src"
    make_tree(src, TREE)
    cache_file = tmp_path / "home" / "hash-cache.json"
    sync.push(store, src, "d/", cache=sync.HashCache(cache_file))
    assert cache_file.is_file()
    # Same size and mtime, different bytes: a cache hit trusts the recorded md5 (as rsync
    # trusts size+mtime), which proves the file was not hashed again.
    p = src / "img/001.txt"
    st = p.stat()
    p.write_bytes(b"A photo of sks cat")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sync.plan_push(store, src, "d/", cache=sync.HashCache(cache_file)).uploads == []
    assert [t.rel for t in sync.plan_push(store, src, "d/").uploads] == ["img/001.txt"]  # no cache: hashed
    os.utime(p)  # touched: the cache misses and the change is found
    plan = sync.plan_push(store, src, "d/", cache=sync.HashCache(cache_file))
    assert [t.rel for t in plan.uploads] == ["img/001.txt"]


def test_pull_deletes_local_extras_only_when_asked(store, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, TREE)
    sync.push(store, src, "d/x/")
    make_tree(dst, {"mine.txt": b"keep me unless asked"})
    sync.pull(store, "d/x/", dst)
    assert (dst / "mine.txt").exists()
    plan = sync.plan_pull(store, "d/x/", dst, delete=True)
    assert plan.deletes == ["mine.txt"] and plan.downloads == []
    assert sync.apply(plan, store).deleted == 1
    assert read_tree(dst) == TREE


def test_failed_transfer_skips_deletes(store, tmp_path):
    src = tmp_path / "src"
    make_tree(src, {"a": b"1", "b": b"2"})
    store.write_bytes("d/x/extra", b"x")
    with pytest.raises(StorageError):
        sync.push(CountingStorage(store, fail_after_uploads=0), src, "d/x/", delete=True)
    assert store.exists("d/x/extra")


def test_unsafe_local_names_are_reported_not_uploaded(store, tmp_path):
    src = tmp_path / "src"
    make_tree(src, {"ok.txt": b"1", "back\\slash.txt": b"2"})
    plan = sync.plan_push(store, src, "d/")
    assert plan.rejected == ["back\\slash.txt"] and [t.rel for t in plan.uploads] == ["ok.txt"]


def test_bad_inputs(store, tmp_path):
    with pytest.raises(StorageError, match="not a folder"):
        sync.plan_push(store, tmp_path / "missing", "d/")
    with pytest.raises(ConfigError):
        sync.plan_push(store, tmp_path, "../up/")
    with pytest.raises(ConfigError):
        sync.apply(sync.SyncPlan("push", tmp_path, "d/"), store, workers=0)
    assert sync.plan_pull(store, "nothing/", tmp_path / "new").empty


def test_plan_to_dict_is_json_ready(store, tmp_path):
    src = tmp_path / "src"
    make_tree(src, {"a": b"12"})
    d = sync.plan_push(store, src, "d").to_dict()
    assert d == {"direction": "push", "local_dir": str(src), "prefix": "d/", "transfers": 1, "bytes": 2,
                 "deletes": 0, "skips": 0, "rejected": []}


def test_pull_never_writes_through_a_symlinked_folder(store, tmp_path):
    store.write_bytes("d/sub/x.txt", b"x")
    store.write_bytes("d/y.txt", b"y")
    dst, outside = tmp_path / "dst", tmp_path / "outside"
    dst.mkdir()
    outside.mkdir()
    (dst / "sub").symlink_to(outside, target_is_directory=True)
    plan = sync.plan_pull(store, "d/", dst)
    assert plan.rejected == ["sub/x.txt"] and [t.rel for t in plan.downloads] == ["y.txt"]
    sync.apply(plan, store)
    assert list(outside.iterdir()) == []
    # a plan made before the folder turned into a symlink is refused at apply time too
    (dst / "sub").unlink()
    plan = sync.plan_pull(store, "d/", dst)
    (dst / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="outside"):
        sync.apply(plan, store)
    assert list(outside.iterdir()) == []


def test_a_first_upload_plan_asks_the_cache_nothing_and_keeps_one_object_per_file(store, tmp_path):
    """Planning a first upload: one stat per file, no hash, no cache lookup, and one object per
    file for the garbage collector to count (its Transfer): 10,000 files' worth of stat results
    and file records set off full collections that cost planning a third of its time."""
    import gc

    n = 2000
    src = tmp_path / "src"
    make_tree(src, {f"{i // 50}/img_{i:04}.jpg": b"x" * (i % 7 + 1) for i in range(n)})

    class Counting(sync.HashCache):
        calls = 0

        def lookup(self, *a):
            Counting.calls += 1
            return super().lookup(*a)

        def checksums(self, *a, **kw):
            Counting.calls += 1
            return super().checksums(*a, **kw)

    collections = []

    def count(phase, info):
        if phase == "start" and info["generation"] == 0:
            collections.append(1)

    threshold = gc.get_threshold()
    gc.collect()
    gc.set_threshold(100)  # a young collection per 100 objects made and kept
    gc.callbacks.append(count)
    try:
        plan = sync.plan_push(store, src, "d/", cache=Counting())
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
    assert len(plan.uploads) == n and Counting.calls == 0
    assert all(t.checksums is None for t in plan.uploads)  # the upload hashes what it sends
    assert len(collections) <= 1.5 * n / 100  # about one per Transfer (keeping every stat result: 55)

    sync.apply(plan, store)
    warm = Counting()
    for f in sync.scan_local(src):
        warm.put(f.path, f, checksum_file(f.path))
    Counting.calls = 0
    assert len(sync.plan_push(store, src, "d/", cache=warm).skips) == n
    assert Counting.calls == 2 * n  # a cache that knows the files is asked (checksums, its lookup) per file


class HalfFast(LocalStorage):
    """A storage with a fast way for many small reads that lands every other file and hands the
    rest back (what GCS's does with answers it cannot verify)."""

    def __init__(self, root):
        super().__init__(root)
        self.fast: list[str] = []
        self.careful: list[str] = []

    def fetch_many(self, keys, land, *, in_flight, max_size):
        assert in_flight == 3 * sync.BULK_FANOUT and max_size == sync.SMALL_FILE
        for i, key in enumerate(keys):
            if i % 2 == 0:
                self.fast.append(key)
                land(i, self.read_bytes(key), self.stat(key))
        return [i for i in range(len(keys)) if i % 2]

    def download_file(self, key, path, **kw):
        self.careful.append(key)
        return super().download_file(key, path, **kw)


def test_a_pull_takes_the_storages_fast_way_first_and_the_careful_way_for_the_rest(tmp_path):
    store = HalfFast(tmp_path / "bucket")
    tree = {f"s{i}.txt": f"small {i}".encode() for i in range(6)} | {"big.bin": os.urandom(sync.SMALL_FILE)}
    for rel, data in tree.items():
        store.write_bytes("d/" + rel, data)
    events = []
    cache = sync.HashCache(tmp_path / "hashes.json")
    result = sync.pull(store, "d/", tmp_path / "out", workers=3, progress=events.append, cache=cache)
    assert read_tree(tmp_path / "out") == tree
    assert result.files == 7 and len(events) == 7 and events[-1].bytes_done == sum(map(len, tree.values()))
    assert sorted(store.fast) == ["d/s0.txt", "d/s2.txt", "d/s4.txt"]
    assert sorted(store.careful) == ["d/big.bin", "d/s1.txt", "d/s3.txt", "d/s5.txt"]
    assert not list((tmp_path / "out").glob(".*"))  # no partial left behind
    again = sync.plan_pull(store, "d/", tmp_path / "out", cache=sync.HashCache(tmp_path / "hashes.json"))
    assert again.transfers == []


@pytest.mark.parametrize("after_planning, error", [
    (lambda out, tmp: (out / "sub").symlink_to(tmp, target_is_directory=True), "would land outside"),
    (lambda out, tmp: (out / "sub").write_bytes(b"a file where a folder should be"), "cannot download 'd/sub/a.txt'"),
], ids=["a folder turned symlink", "a file where a folder should be"])
def test_a_fast_landing_that_cannot_be_made_is_a_storage_error(tmp_path, after_planning, error):
    store = HalfFast(tmp_path / "bucket")
    store.write_bytes("d/sub/a.txt", b"a")
    out = tmp_path / "out"
    plan = sync.plan_pull(store, "d/", out)
    out.mkdir()
    after_planning(out, tmp_path)
    with pytest.raises(StorageError, match=error):
        sync.apply(plan, store, workers=3)
    assert store.fast == ["d/sub/a.txt"] and store.careful == []
    assert not (tmp_path / "a.txt").exists()
