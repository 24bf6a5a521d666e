"""The status protocol: bounded writes, readers, tolerance of a flaky bucket."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import StorageError
from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.status import StatusReporter, read_events, read_status


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class CountingStorage(LocalStorage):
    """The real local storage, counting writes and able to fail them."""

    def __init__(self, root):
        super().__init__(root)
        self.writes: list[str] = []
        self.fail = False

    def write_bytes(self, key, data, **kw):
        if self.fail:
            raise StorageError("bucket unavailable")
        self.writes.append(key)
        return super().write_bytes(key, data, **kw)


@pytest.fixture
def setup(tmp_path):
    clock = Clock()
    storage = CountingStorage(tmp_path / "b")
    return storage, clock, StatusReporter(storage, "r1", min_interval=10, log_interval=60, clock=clock)


def test_state_changes_write_at_once_progress_at_the_rate(setup):
    storage, clock, rep = setup
    rep.update(state=RunState.TRAINING, total_steps=100)
    assert read_status(storage, "r1").state == RunState.TRAINING
    n = len(storage.writes)
    for step in range(1, 50):  # 49 steps within 5 s: no write
        clock.t += 0.1
        rep.update(step=step, loss=0.4)
    assert len(storage.writes) == n
    clock.t += 10
    rep.update(step=50)
    status = read_status(storage, "r1")
    assert (status.step, status.loss, status.total_steps) == (50, 0.4, 100)
    assert status.updated_at == clock.t


def test_events_append_and_survive_a_new_reporter(setup):
    storage, clock, rep = setup
    rep.update(state=RunState.STARTING)
    rep.event("epoch", epoch=1)
    rep.update(state=RunState.TRAINING)
    again = StatusReporter(storage, "r1", clock=clock)
    assert again.resume_from_bucket().state == RunState.TRAINING
    again.update(state=RunState.DONE)
    kinds = [(e["kind"], e.get("state", e.get("epoch"))) for e in read_events(storage, "r1")]
    assert kinds == [("state", "starting"), ("epoch", 1), ("state", "training"), ("state", "done")]
    assert [e["kind"] for e in read_events(storage, "r1", since=3)] == ["state"]


def test_flaky_bucket_does_not_raise_during_the_run_but_flush_does(setup):
    storage, clock, rep = setup
    storage.fail = True
    rep.update(state=RunState.TRAINING)  # logged, not raised
    with pytest.raises(StorageError):
        rep.flush()
    storage.fail = False
    rep.maybe_write(force=True)
    assert read_status(storage, "r1").state == RunState.TRAINING


def test_log_upload_is_rate_bounded_and_redacted(setup, tmp_path):
    storage, clock, rep = setup
    log = tmp_path / "trainer.log"
    log.write_text("Authorization: Bearer abcdefghijklmnop\nstep 1\n")
    rep.upload_log(log)
    log.write_text(log.read_text() + "step 2\n")
    rep.upload_log(log)  # too soon
    body = storage.read_bytes("runs/r1/logs/trainer.log").decode()
    assert "step 2" not in body and "abcdefghijklmnop" not in body and "step 1" in body
    clock.t += 61
    rep.upload_log(log)
    assert "step 2" in storage.read_bytes("runs/r1/logs/trainer.log").decode()


def test_readers_on_an_empty_run(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    assert read_status(storage, "nope") is None and read_events(storage, "nope") == []
