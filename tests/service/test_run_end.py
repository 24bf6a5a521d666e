"""Ending a run: the bucket first, then the store; an end the bucket refused is kept and written
again until both say it, with one end event (service/runs/lifecycle.py), and the guard does that before
reconcile could call the run lost."""

from __future__ import annotations

import pytest

from comfy_lora_cloud.errors import StorageError
from comfy_lora_cloud.models import Run, RunState
from comfy_lora_cloud.service.runs.lifecycle import PENDING, end_run, finish_pending, pending_end
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.status import StatusReporter, read_events, read_status


class StatusRefused(LocalStorage):
    """The real local storage, refusing writes of status.json while ``refuse`` is set (the
    events log still lands: the order the status protocol writes them in)."""

    refuse = True

    def write_bytes(self, key, data, **kw):
        if self.refuse and key.endswith("/status.json"):
            raise StorageError(f"access to {key} was denied")
        return super().write_bytes(key, data, **kw)


@pytest.fixture
def world(tmp_path):
    storage = StatusRefused(tmp_path / "bucket")
    storage.refuse = False
    StatusReporter(storage, "r1").update(state=RunState.TRAINING)
    state = StateStore(tmp_path / "state.db")
    state.put_run(Run(id="r1", dataset="cats", preset="character", lora_name="cats", state=RunState.TRAINING))
    return storage, state


def ends(storage) -> list[dict]:
    return [e for e in read_events(storage, "r1") if e["kind"] == "state" and e["state"] == "failed"]


def test_a_refused_end_leaves_the_store_live_and_is_finished_later_with_one_event(world):
    storage, state = world
    storage.refuse = True
    ended = end_run(state, storage, "r1", RunState.FAILED, "over budget")
    assert "denied" in ended.problem and ended.state is None
    assert state.get_run("r1").state is RunState.TRAINING  # the store never says more than the bucket
    assert read_status(storage, "r1").state is RunState.TRAINING and len(ends(storage)) == 1
    assert finish_pending(state, storage)[0].problem  # still refused: kept
    assert state.get_kv(PENDING + "r1")

    storage.refuse = False
    (done,) = finish_pending(state, storage)
    assert done.state is RunState.FAILED and not done.problem
    assert state.get_run("r1").state is RunState.FAILED and state.get_run("r1").error == "over budget"
    assert read_status(storage, "r1").state is RunState.FAILED
    assert len(ends(storage)) == 1  # the retry added no second end event
    assert finish_pending(state, storage) == []  # nothing left to do


def test_the_trainers_own_end_wins_in_the_store_too(world):
    storage, state = world
    StatusReporter(storage, "r1").update(state=RunState.DONE)
    assert end_run(state, storage, "r1", RunState.FAILED, "over budget").state is RunState.DONE
    assert state.get_run("r1").state is RunState.DONE and read_status(storage, "r1").state is RunState.DONE


def test_a_pending_end_that_cannot_be_read_is_dropped(world):
    storage, state = world
    state.set_kv(PENDING + "r1", "{not json")
    assert finish_pending(state, storage) == []
    assert not state.get_kv(PENDING + "r1") and state.get_run("r1").state is RunState.TRAINING


def test_the_end_decided_first_stands_while_the_bucket_refuses(world):
    """The watchdog's FAILED is refused; a later round that finds the instance gone would call the
    run LOST: the end decided first is the one written, in both, with one end event."""
    storage, state = world
    storage.refuse = True
    assert end_run(state, storage, "r1", RunState.FAILED, "over budget").problem
    assert end_run(state, storage, "r1", RunState.LOST, "instance vanished").problem
    assert pending_end(state, "r1") == "over budget"
    storage.refuse = False
    assert end_run(state, storage, "r1", RunState.LOST, "instance vanished").state is RunState.FAILED
    assert state.get_run("r1").state is RunState.FAILED and state.get_run("r1").error == "over budget"
    assert read_status(storage, "r1").state is RunState.FAILED and len(ends(storage)) == 1
    assert pending_end(state, "r1") is None and finish_pending(state, storage) == []


def test_only_an_end_is_written(world):
    storage, state = world
    with pytest.raises(ValueError):
        end_run(state, storage, "r1", RunState.PREEMPTED, "not an end")
    assert state.get_run("r1").state is RunState.TRAINING
