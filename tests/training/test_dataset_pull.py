"""The trainer's dataset pull goes through the sync engine: one listing, parallel
verified transfers, files already there with the same checksum kept, only the top level."""

from __future__ import annotations

from comfy_lora_cloud.storage import LocalStorage, layout
from comfy_lora_cloud.worker.dataset_pull import pull_dataset
from tests.contract.storage_contract import CountingStorage


def test_pull_brings_images_and_captions_once(tmp_path):
    bucket = LocalStorage(tmp_path / "bucket")
    prefix = layout.dataset_prefix("cats")
    for i in range(3):
        bucket.write_bytes(f"{prefix}{i}.png", b"png-%d" % i)
        bucket.write_bytes(f"{prefix}{i}.txt", b"a cat %d" % i)
    bucket.write_bytes(prefix + layout.MANIFEST, b"{}")
    bucket.write_bytes(prefix + "extra/deep.png", b"not for kohya")
    out = tmp_path / "img"
    assert pull_dataset(bucket, "cats", out) == ["0.png", "1.png", "2.png"]
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "0.txt", "1.png", "1.txt", "2.png", "2.txt"]

    (out / "1.png").write_bytes(b"png-X")  # same size, other bytes: fetched again
    (out / "0.npz").write_bytes(b"kohya's cache")  # left alone
    counting = CountingStorage(bucket)
    assert pull_dataset(counting, "cats", out) == ["0.png", "1.png", "2.png"]
    assert counting.calls.get("download_file") == 1 and counting.calls.get("list") == 1
    assert (out / "1.png").read_bytes() == b"png-1" and (out / "0.npz").exists()
