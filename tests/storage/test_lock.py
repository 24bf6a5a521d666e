"""The storage lease (storage/lock.py) on the local folder and on GCS (real client, emulator):
one holder, a clear error naming it, stale and dead holders taken over, a taken-over holder
stops and never deletes its successor's lease."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from comfy_lora_cloud.errors import LockHeld
from comfy_lora_cloud.storage import LocalStorage
from comfy_lora_cloud.storage import lock as leases

KEY = "datasets/cat/.lora-cloud-lock.json"


@pytest.fixture(params=["local", "gcs"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "bucket")
    from comfy_lora_cloud.storage.gcs import GcsStorage

    env = request.getfixturevalue("gcs_env")
    return GcsStorage(request.getfixturevalue("gcs_bucket"), "p", client=env.client())


def _foreign_lock(storage, *, host="elsewhere", pid=4242, heartbeat=1000.0):
    info = leases.LockInfo(host, pid, "bob", "uploading /photos to datasets/cat/", heartbeat, heartbeat)
    return storage.write_bytes(KEY, info.to_bytes(), if_generation_match=0)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid is free again
    return proc.pid


def test_second_writer_is_refused_with_the_holder_named(storage):
    with leases.acquire(storage, KEY, purpose="uploading /a", data={"source": "/a"}) as lease:
        assert lease.previous is None
        with pytest.raises(LockHeld) as exc:
            leases.acquire(storage, KEY, purpose="uploading /b")
        msg = exc.value.message
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "uploading /a" in msg
        assert exc.value.holder["data"] == {"source": "/a"} and exc.value.http_status == 409
    assert not storage.exists(KEY)  # released
    leases.acquire(storage, KEY, purpose="again").release()  # and free for the next one


def test_live_foreign_lock_is_kept_until_it_is_stale(storage):
    _foreign_lock(storage, heartbeat=1000.0)
    with pytest.raises(LockHeld, match="bob@elsewhere"):
        leases.acquire(storage, KEY, purpose="x", clock=lambda: 1000.0 + leases.STALE_S - 1)
    with leases.acquire(storage, KEY, purpose="x", clock=lambda: 1000.0 + leases.STALE_S + 1) as lease:
        assert lease.previous is not None and lease.previous.host == "elsewhere"
        assert json.loads(storage.read_bytes(KEY))["pid"] == os.getpid()


def test_lock_of_a_dead_process_on_this_machine_is_taken_over_at_once(storage):
    _foreign_lock(storage, host=socket.gethostname(), pid=_dead_pid(), heartbeat=10**10)  # fresh heartbeat
    with leases.acquire(storage, KEY, purpose="x") as lease:
        assert lease.previous.pid != os.getpid()


def test_taken_over_holder_stops_and_leaves_the_new_lease(storage):
    now = [1000.0]
    old = leases.acquire(storage, KEY, purpose="old", clock=lambda: now[0], renew_s=3600)
    now[0] += leases.STALE_S + 1  # the old holder stopped renewing (a closed laptop)
    new = leases.acquire(storage, KEY, purpose="new", clock=lambda: now[0])
    with pytest.raises(LockHeld, match="lost the lock"):
        old.confirm()
    old.release()
    assert json.loads(storage.read_bytes(KEY))["purpose"] == "new"  # not deleted by the old holder
    new.release()
    assert not storage.exists(KEY)


def test_renewal_keeps_a_long_holder_fresh(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    now = [1000.0]
    with leases.acquire(storage, KEY, purpose="long", clock=lambda: now[0], stale_s=60, renew_s=3600) as lease:
        now[0] += 50
        lease.renew()
        now[0] += 50  # 100 s after it started, 50 s after its last renewal: still live
        with pytest.raises(LockHeld):
            leases.acquire(storage, KEY, purpose="other", clock=lambda: now[0], stale_s=60)


def test_unreadable_lock_goes_stale_by_its_object_time(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    info = storage.write_bytes(KEY, b"not json")
    with pytest.raises(LockHeld, match="unreadable lock"):
        leases.acquire(storage, KEY, purpose="x", clock=lambda: info.updated + 1)
    leases.acquire(storage, KEY, purpose="x", clock=lambda: info.updated + leases.STALE_S + 1).release()


def test_an_abandoned_lease_is_taken_over_at_once_with_its_record(storage):
    lease = leases.acquire(storage, KEY, purpose="half done", data={"source": "/a"})
    lease.abandon()
    assert storage.exists(KEY)  # left behind on purpose
    with leases.acquire(storage, KEY, purpose="next") as nxt:
        assert nxt.previous.purpose == "half done" and nxt.previous.data == {"source": "/a"}
