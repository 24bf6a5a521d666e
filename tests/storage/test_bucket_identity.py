"""The bucket's id and clock (storage/identity.py), on a local folder and on the GCS emulator with
the real client: two homes creating the id at once agree on one, a damaged id object is never
replaced, and the bucket's time is the one the storage put on a write."""

from __future__ import annotations

import threading
import time

import pytest

from comfy_lora_cloud.errors import CorruptRecord
from comfy_lora_cloud.storage.gcs import GcsStorage
from comfy_lora_cloud.storage.identity import (ID_KEY, bucket_time, ensure_bucket_id, is_bucket_id,
                                               read_bucket_id)
from comfy_lora_cloud.storage.local import LocalStorage


@pytest.fixture(params=["local", "gcs"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "bucket")
    return GcsStorage.from_url(f"gs://{request.getfixturevalue('gcs_bucket')}/lc")


class BothReadFirst:
    """Storage whose writers of the id wait until every creator has read it (and found none),
    so the creators really race for the one "only if absent" write."""

    def __init__(self, inner, creators: int):
        self.inner = inner
        self.url = inner.url
        self.barrier = threading.Barrier(creators)
        self.attempts = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write_bytes(self, key, data, **kwargs):
        if key == ID_KEY:
            self.attempts += 1
            self.barrier.wait(timeout=30)
        return self.inner.write_bytes(key, data, **kwargs)


def test_two_homes_creating_the_id_at_once_agree_on_one(storage):
    racing = BothReadFirst(storage, 2)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(ensure_bucket_id(racing))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert racing.attempts == 2  # both tried to create it: one write won, the other read it
    assert len(got) == 2 and got[0] == got[1] == read_bucket_id(storage) and is_bucket_id(got[0])
    assert ensure_bucket_id(storage) == got[0]  # made once, kept


def test_an_id_that_is_not_one_is_reported_never_replaced(storage):
    assert read_bucket_id(storage) is None
    storage.write_bytes(ID_KEY, b'{"id": "../../etc"}')
    with pytest.raises(CorruptRecord, match="no id"):
        ensure_bucket_id(storage)
    storage.write_bytes(ID_KEY, b"[" * 100_000)
    with pytest.raises(CorruptRecord):
        read_bucket_id(storage)
    assert storage.read_bytes(ID_KEY) == b"[" * 100_000


def test_a_deleted_id_comes_back_as_the_one_preferred(storage):
    first = ensure_bucket_id(storage)
    storage.delete(ID_KEY)
    assert ensure_bucket_id(storage, prefer=first) == first
    assert ensure_bucket_id(storage, prefer="0123456789ab") == first  # an existing id always wins


def test_the_buckets_time_is_the_time_the_storage_put_on_a_write(storage):
    ahead = 40 * 60.0
    t = bucket_time(storage, clock=lambda: time.time() + ahead)  # this machine 40 min fast
    assert abs(t.bucket - time.time()) < 60  # the storage's clock (the emulator's, the file system's)
    assert abs(t.skew_s - ahead) < 60
