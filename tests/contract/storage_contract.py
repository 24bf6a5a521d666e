"""The storage contract: every Storage implementation must pass these tests.

Subclasses provide a ``storage`` fixture (a fresh, empty store) and :meth:`corrupt`, which changes
an object's bytes behind the store's back without changing its size (how depends on the backend).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfy_lora_cloud.errors import ChecksumMismatch, ConfigError, ObjectNotFound, PreconditionFailed, StorageError
from comfy_lora_cloud.storage import sync
from comfy_lora_cloud.storage.base import Listing, Storage, checksum_bytes, checksum_file


class CountingStorage:
    """Passes every call through and counts them (to show what a re-sync costs)."""

    def __init__(self, inner: Storage, fail_after_uploads: int | None = None):
        self.inner = inner
        self.url = inner.url
        self.calls: dict[str, int] = {}
        self.fail_after_uploads = fail_after_uploads

    def __getattr__(self, name):
        fn = getattr(self.inner, name)

        def call(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in ("upload_file", "download_file") and self.fail_after_uploads is not None:
                if self.calls[name] > self.fail_after_uploads:
                    raise StorageError("connection lost (simulated interruption)")
            return fn(*args, **kwargs)

        return call


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {rel: p.read_bytes() for rel, p in sync.local_files(root)}


TREE = {
    "img/001.png": b"\x89PNG one" * 100,
    "img/001.txt": b"a photo of sks cat",
    "img/002.png": b"\x89PNG two" * 300,
    "img/002.txt": b"another photo",
    "dataset.json": b'{"images": 2}',
    "deep/er/still/x.bin": os.urandom(5000),
}


class StorageContract:
    """Inherit, and supply ``storage`` and ``corrupt``."""

    def corrupt(self, storage: Storage, key: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- single objects ---------------------------------------------------------------------
    def test_write_read_stat_roundtrip(self, storage: Storage) -> None:
        data = b"hello lora" * 1000
        info = storage.write_bytes("datasets/cat/a.txt", data, metadata={"run": "r1"})
        c = checksum_bytes(data)
        assert (info.size, info.md5, info.crc32c) == (len(data), c.md5, c.crc32c)
        assert info.generation
        st = storage.stat("datasets/cat/a.txt")
        assert (st.key, st.size, st.md5, st.crc32c) == ("datasets/cat/a.txt", len(data), c.md5, c.crc32c)
        assert storage.read_bytes("datasets/cat/a.txt") == data
        assert storage.exists("datasets/cat/a.txt")

    def test_missing_object(self, storage: Storage, tmp_path: Path) -> None:
        storage.write_bytes("there/yes.txt", b"1")
        assert not storage.exists("there/no.txt")
        for call in (
            lambda: storage.stat("there/no.txt"),
            lambda: storage.read_bytes("there/no.txt"),
            lambda: storage.delete("there/no.txt"),
            lambda: storage.download_file("there/no.txt", tmp_path / "out" / "no.txt"),
        ):
            with pytest.raises(ObjectNotFound, match="no.txt"):
                call()
        assert not (tmp_path / "out" / "no.txt").exists()
        assert [p.name for p in (tmp_path / "out").glob("*")] == []

    def test_overwrite_changes_generation(self, storage: Storage) -> None:
        g1 = storage.write_bytes("k.txt", b"one").generation
        g2 = storage.write_bytes("k.txt", b"two, longer").generation
        assert g1 != g2
        assert storage.read_bytes("k.txt") == b"two, longer"
        assert storage.stat("k.txt").generation == g2

    def test_prefixes_and_delimiters(self, storage: Storage) -> None:
        for key in ("a/1", "a/b/2", "a/b/3", "ab/4", "c"):
            storage.write_bytes(key, key.encode())
        assert [o.key for o in storage.list("a/").objects] == ["a/1", "a/b/2", "a/b/3"]
        assert [o.key for o in storage.list("a").objects] == ["a/1", "a/b/2", "a/b/3", "ab/4"]
        top = storage.list("", delimiter="/")
        assert [o.key for o in top.objects] == ["c"]
        assert top.prefixes == ["a/", "ab/"]
        sub = storage.list("a/", delimiter="/")
        assert ([o.key for o in sub.objects], sub.prefixes) == (["a/1"], ["a/b/"])
        assert storage.list("zzz/") == Listing([], [])
        assert storage.list("a/b/").objects[0].size == 5

    def test_match_glob_lists_one_file_per_folder(self, storage: Storage) -> None:
        """``runs/*/status.json``: every run's status in one listing, none of the rest."""
        for key in ("runs/r1/status.json", "runs/r2/status.json", "runs/r2/samples/status.json",
                    "runs/r3/spec.json", "runs/r4/status.json.bak", "other/r5/status.json", "runs/status.json"):
            storage.write_bytes(key, b"{}")
        listed = storage.list("runs/", match_glob="runs/*/status.json").objects
        assert [o.key for o in listed] == ["runs/r1/status.json", "runs/r2/status.json"]
        assert all(o.generation for o in listed)
        assert [o.key for o in storage.list("runs/", match_glob="runs/**.json").objects] == [
            "runs/r1/status.json", "runs/r2/samples/status.json", "runs/r2/status.json", "runs/r3/spec.json",
            "runs/status.json"]

    def test_a_listed_record_is_read_as_listed(self, storage: Storage) -> None:
        """One request per record a listing described: its size is checked from the listing, and
        what is read is the generation listed (a record swapped after the listing is not read)."""
        from comfy_lora_cloud.errors import CorruptRecord
        from comfy_lora_cloud.storage.base import read_listed_record

        storage.write_bytes("datasets/a/dataset.json", b'{"trigger": "sks"}')
        [info] = storage.list("datasets/a/").objects
        assert read_listed_record(storage, info, 100) == b'{"trigger": "sks"}'
        with pytest.raises(CorruptRecord):
            read_listed_record(storage, info, 10)  # refused from the listed size: nothing fetched
        storage.write_bytes("datasets/a/dataset.json", b'{"trigger": "' + b"x" * 500 + b'"}')
        with pytest.raises((ObjectNotFound, CorruptRecord)):  # GCS: that generation is gone; local: too big
            read_listed_record(storage, info, 100)

    def test_delete_and_delete_prefix(self, storage: Storage) -> None:
        for key in ("runs/r1/a", "runs/r1/logs/b", "runs/r10/c", "runs/r2/d"):
            storage.write_bytes(key, b"x")
        storage.delete("runs/r2/d")
        assert not storage.exists("runs/r2/d")
        assert storage.delete_prefix("runs/r1/") == 2
        assert [o.key for o in storage.list("runs/").objects] == ["runs/r10/c"]

    def test_large_file_roundtrip(self, storage: Storage, tmp_path: Path) -> None:
        src = tmp_path / "big.safetensors"
        src.write_bytes(os.urandom(20 * 1024 * 1024 + 123))
        c = checksum_file(src)
        info = storage.upload_file(src, "loras/big.safetensors")
        assert (info.size, info.md5) == (c.size, c.md5)
        out = tmp_path / "dl" / "big.safetensors"
        storage.download_file("loras/big.safetensors", out)
        assert checksum_file(out) == c
        assert sorted(p.name for p in out.parent.iterdir()) == ["big.safetensors"]

    def test_corrupted_object_is_detected(self, storage: Storage, tmp_path: Path) -> None:
        storage.write_bytes("loras/x.safetensors", b"good weights" * 100)
        self.corrupt(storage, "loras/x.safetensors")
        with pytest.raises(ChecksumMismatch):
            storage.read_bytes("loras/x.safetensors")
        dest = tmp_path / "dl" / "x.safetensors"
        dest.parent.mkdir()
        dest.write_bytes(b"previous good copy")
        with pytest.raises(ChecksumMismatch):
            storage.download_file("loras/x.safetensors", dest)
        assert dest.read_bytes() == b"previous good copy"  # never replaced by bad bytes
        assert [p.name for p in dest.parent.iterdir()] == ["x.safetensors"]  # no temp file left

    def test_concurrent_writer_loses_on_generation(self, storage: Storage) -> None:
        base = storage.write_bytes("runs/r/status.json", b'{"v": 1}')
        # writer A and writer B both read generation `base`; A writes first
        a = storage.write_bytes("runs/r/status.json", b'{"v": "A"}', if_generation_match=base.generation)
        with pytest.raises(PreconditionFailed):
            storage.write_bytes("runs/r/status.json", b'{"v": "B"}', if_generation_match=base.generation)
        assert storage.read_bytes("runs/r/status.json") == b'{"v": "A"}'
        with pytest.raises(PreconditionFailed):  # create-only on an existing object
            storage.write_bytes("runs/r/status.json", b"new", if_generation_match=0)
        assert storage.write_bytes("runs/r/new.json", b"{}", if_generation_match=0).size == 2
        with pytest.raises(PreconditionFailed):
            storage.delete("runs/r/status.json", if_generation_match=base.generation)
        storage.delete("runs/r/status.json", if_generation_match=a.generation)
        assert not storage.exists("runs/r/status.json")

    def test_unicode_and_odd_names(self, storage: Storage, tmp_path: Path) -> None:
        names = ["datasets/ünïcødé/猫 1.png", "datasets/x/space and +=#?%20.txt", "datasets/x/emoji-🙂.txt"]
        for i, key in enumerate(names):
            storage.write_bytes(key, f"data {i}".encode())
        assert sorted(o.key for o in storage.list("datasets/").objects) == sorted(names)
        assert storage.list("datasets/", delimiter="/").prefixes == ["datasets/x/", "datasets/ünïcødé/"]
        assert storage.read_bytes(names[0]) == b"data 0"
        storage.download_file(names[1], tmp_path / "o.txt")
        assert (tmp_path / "o.txt").read_bytes() == b"data 1"

    @pytest.mark.parametrize("bad", ["../x", "a/../../b", "/abs", "a//b", "a\\b", "", "./a", "a/\x00"])
    def test_path_tricks_rejected(self, storage: Storage, bad: str, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            storage.write_bytes(bad, b"x")
        with pytest.raises(ConfigError):
            storage.stat(bad)
        with pytest.raises(ConfigError):
            storage.download_file(bad, tmp_path / "o")
        assert storage.list("").objects == []
        assert not (tmp_path / "o").exists()

    # ---- sync ---------------------------------------------------------------------------------
    def test_push_pull_roundtrip_and_resync_moves_nothing(self, storage: Storage, tmp_path: Path) -> None:
        src, dst = tmp_path / "src", tmp_path / "dst"
        make_tree(src, TREE)
        first = sync.push(storage, src, "datasets/cat", workers=4)
        assert (first.files, first.bytes) == (len(TREE), sum(map(len, TREE.values())))
        counting = CountingStorage(storage)
        again = sync.push(counting, src, "datasets/cat/", workers=4)
        assert (again.files, again.bytes) == (0, 0)
        assert counting.calls == {"list": 1}  # a re-sync costs one listing, nothing else
        sync.pull(storage, "datasets/cat/", dst, workers=4)
        assert read_tree(dst) == TREE
        counting = CountingStorage(storage)
        assert sync.pull(counting, "datasets/cat/", dst).bytes == 0
        assert counting.calls == {"list": 1}

    def test_interrupted_push_is_finished_by_the_next(self, storage: Storage, tmp_path: Path) -> None:
        src = tmp_path / "src"
        make_tree(src, TREE)
        flaky = CountingStorage(storage, fail_after_uploads=2)
        with pytest.raises(StorageError, match="interruption"):
            sync.push(flaky, src, "datasets/cat/", workers=1)
        landed = storage.list("datasets/cat/").objects
        assert 0 < len(landed) < len(TREE)
        for o in landed:  # what landed is whole
            assert storage.read_bytes(o.key) == TREE[o.key[len("datasets/cat/"):]]
        plan = sync.plan_push(storage, src, "datasets/cat/")
        assert len(plan.skips) == len(landed) and len(plan.uploads) == len(TREE) - len(landed)
        result = sync.apply(plan, storage, workers=4)
        assert result.files == len(TREE) - len(landed)
        assert sync.plan_push(storage, src, "datasets/cat/").empty

    def test_interrupted_pull_is_finished_by_the_next(self, storage: Storage, tmp_path: Path) -> None:
        src, dst = tmp_path / "src", tmp_path / "dst"
        make_tree(src, TREE)
        sync.push(storage, src, "datasets/cat/")
        with pytest.raises(StorageError, match="interruption"):
            sync.pull(CountingStorage(storage, fail_after_uploads=3), "datasets/cat/", dst, workers=1)
        partial = read_tree(dst)
        assert 0 < len(partial) < len(TREE)
        assert all(TREE[rel] == data for rel, data in partial.items())
        assert not [p for p in dst.rglob("*") if p.name.startswith(".lora-cloud-partial")]
        result = sync.pull(storage, "datasets/cat/", dst)
        assert result.files == len(TREE) - len(partial)
        assert read_tree(dst) == TREE

    def test_changed_file_is_resent_and_extras_deleted_only_when_asked(self, storage: Storage, tmp_path: Path) -> None:
        src = tmp_path / "src"
        make_tree(src, TREE)
        sync.push(storage, src, "d/x/")
        (src / "img/001.txt").write_bytes(b"a photo of sks cat, edited")
        (src / "dataset.json").unlink()
        plan = sync.plan_push(storage, src, "d/x/")
        assert [t.rel for t in plan.uploads] == ["img/001.txt"] and plan.deletes == []
        sync.apply(plan, storage)
        assert storage.exists("d/x/dataset.json")
        plan = sync.plan_push(storage, src, "d/x/", delete=True)
        assert plan.deletes == ["dataset.json"] and plan.uploads == []
        assert sync.apply(plan, storage).deleted == 1
        assert not storage.exists("d/x/dataset.json")
        assert storage.read_bytes("d/x/img/001.txt") == b"a photo of sks cat, edited"
