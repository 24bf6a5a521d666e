"""The status protocol: bounded writes, readers, tolerance of a flaky bucket."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import CorruptRecord, StorageError
from comfy_lora_cloud.models import RunState
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.status import StatusReporter, end_run_in_bucket, read_events, read_status


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


@pytest.mark.parametrize("body, why", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"state": "paused_for_v2"}', "unknown state"),
    (b'{"state": "training", "step": 1e400}', "out of range"),  # refused by the bounded parser
    (b'{"state": "training", "step": -1}', "not a count"),
    (b'{"state": "training", "step": true}', "not a count"),
    (b'{"state": "training", "total_steps": 1000000000000000000000}', "22 digits"),
    (b'{"state": "training", "total_steps": 100000000000000000}', "not a count"),  # 18 digits: read, then refused
    (b'{"state": "training", "loss": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested deeper"),
    (b'{"state": "training", "loss": NaN}', "not JSON"),
    (b'{"state": "training", "loss": "low"}', "not a finite number"),
    (b'{"state": "training", "message": 12}', "not text"),
    (b'{"state": "training", "updated_at": "now"}', "not a time"),
    (b'{"run_id": "other", "state": "training"}', "names run"),
])
def test_a_status_that_is_not_a_status_is_a_corrupt_record(tmp_path, body, why):
    storage = LocalStorage(tmp_path / "b")
    storage.write_bytes("runs/r1/status.json", body)
    with pytest.raises(CorruptRecord, match=why):
        read_status(storage, "r1")


def test_a_valid_status_keeps_unknown_keys_out_and_reads_a_missing_time_as_zero(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    storage.write_bytes("runs/r1/status.json", b'{"state": "training", "step": 3, "from_the_future": 1}')
    status = read_status(storage, "r1")
    assert (status.state, status.step, status.updated_at, status.run_id) == (RunState.TRAINING, 3, 0.0, "r1")


def test_end_run_in_bucket_keeps_the_trainers_end_and_the_events(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    rep = StatusReporter(storage, "r1")
    rep.update(state=RunState.TRAINING)
    assert end_run_in_bucket(storage, "r1", RunState.LOST, "instance vanished")
    status = read_status(storage, "r1")
    assert (status.state, status.error) == (RunState.LOST, "instance vanished")
    assert [e.get("state") for e in read_events(storage, "r1")] == ["training", "lost"]
    assert not end_run_in_bucket(storage, "r1", RunState.FAILED, "too late")  # lost already: kept
    storage.write_bytes("runs/r2/status.json", b"garbage")  # a status that is not one is replaced
    assert end_run_in_bucket(storage, "r2", RunState.LOST, "gone") and read_status(storage, "r2").state is RunState.LOST


def test_loss_points_for_the_graph_at_a_bounded_rate(setup):
    """A ``progress`` event every 30 s at most: the sidebar redraws the loss graph from them
    after a reload, and a 2000-step run still writes few objects."""
    storage, clock, rep = setup
    for step in range(1, 301):  # one step a second for five minutes
        clock.t += 1
        rep.update(step=step, loss=1.0 / step, sec_per_step=1.0)
    rep.flush()
    points = [(e["step"], e["loss"]) for e in read_events(storage, "r1") if e["kind"] == "progress"]
    assert len(points) == 10 and points[0] == (1, 1.0)
    assert [s for s, _ in points] == sorted(s for s, _ in points)
    assert all(abs(loss - 1.0 / s) < 1e-6 for s, loss in points)
    assert storage.writes.count("runs/r1/events.jsonl") <= 31  # at most one events write per status write
    clock.t += 100
    rep.update(step=301, loss=float("nan"))  # a NaN loss is not a point
    rep.flush()
    assert len([e for e in read_events(storage, "r1") if e["kind"] == "progress"]) == 10
