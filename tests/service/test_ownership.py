"""ownership.decide (who owns a labelled instance) as a table, and bucket_view's freshness on the
bucket's clock, over a real local bucket."""

from __future__ import annotations

import json
import os

import pytest

from comfy_lora_cloud.models import Run, RunState, RunStatus
from comfy_lora_cloud.service.ownership import Bucket, BucketView, Local, Verdict, bucket_view, decide
from comfy_lora_cloud.storage.layout import run_key
from comfy_lora_cloud.storage.local import LocalStorage

NOW = 1_800_000_000.0


def _run(state: RunState) -> Run:
    return Run(id="r", dataset="d", preset="character", lora_name="l", state=state)


def _view(kind: Bucket, state: RunState = RunState.TRAINING) -> BucketView:
    return BucketView(kind, RunStatus(run_id="r", state=state))


LIVE_HERE, ENDED_HERE = Local(run=_run(RunState.TRAINING)), Local(run=_run(RunState.STOPPED))


@pytest.mark.parametrize("run_id, local, bucket, verdict", [
    (None, Local(), None, Verdict.UNOWNED),  # "lora-cloud:" names no run
    ("../etc", Local(), _view(Bucket.ABSENT), Verdict.UNOWNED),  # not a run id this pack makes
    ("r", Local(damaged="malformed"), None, Verdict.DOUBT),  # no owner can be matched
    ("r", LIVE_HERE, _view(Bucket.ENDED, RunState.DONE), Verdict.UNOWNED),  # done, self-destroy failed
    ("r", LIVE_HERE, _view(Bucket.CORRUPT), Verdict.OWNED),  # the store knows it
    ("r", LIVE_HERE, _view(Bucket.STALE), Verdict.OWNED),
    ("r", Local(corrupt="unknown state"), _view(Bucket.ABSENT), Verdict.DOUBT),
    ("r", Local(corrupt="unknown state"), _view(Bucket.ENDED, RunState.FAILED), Verdict.UNOWNED),
    ("r", Local(), _view(Bucket.LIVE), Verdict.OWNED),  # another controller's run
    ("r", ENDED_HERE, _view(Bucket.LIVE), Verdict.OWNED),  # still reporting: never destroy on doubt
    ("r", Local(), _view(Bucket.UNREADABLE), Verdict.DOUBT),
    ("r", Local(), _view(Bucket.CORRUPT), Verdict.DOUBT),
    ("r", ENDED_HERE, _view(Bucket.ABSENT), Verdict.UNOWNED),
    ("r", Local(), _view(Bucket.UNDATED), Verdict.DOUBT),  # the bucket's clock unknown: not judged stale
    ("r", ENDED_HERE, _view(Bucket.UNDATED), Verdict.DOUBT),
    ("r", LIVE_HERE, _view(Bucket.UNDATED), Verdict.OWNED),
    ("r", Local(), _view(Bucket.STALE), Verdict.UNOWNED),
    ("r", Local(), _view(Bucket.ABSENT), Verdict.UNOWNED),
])
def test_decide(run_id, local, bucket, verdict):
    decision = decide(run_id, local, bucket)
    assert decision.verdict is verdict, decision.why
    assert (decision.ended is not None) == (bucket is not None and bucket.kind is Bucket.ENDED)


def _write(storage: LocalStorage, body: dict | str, mtime: float | None = None) -> None:
    storage.write_bytes(run_key("r", "status.json"), (body if isinstance(body, str) else json.dumps(body)).encode())
    if mtime is not None:
        os.utime(storage.root / run_key("r", "status.json"), (mtime, mtime))


def test_bucket_view_judges_freshness_on_the_buckets_clock(tmp_path):
    """How recent a report is: the object's write time (the file system's, a local bucket's clock)
    against the bucket's now; the host-written updated_at never counts, nor does our clock."""
    storage = LocalStorage(tmp_path / "b")
    assert bucket_view(storage, "r", NOW, 1800).kind is Bucket.ABSENT
    # host clock 7 h behind, but the bucket wrote the object a minute ago
    _write(storage, {"run_id": "r", "state": "training", "updated_at": NOW - 7 * 3600}, mtime=NOW - 60)
    assert bucket_view(storage, "r", NOW, 1800).kind is Bucket.LIVE
    # a fresh-looking updated_at on an object nobody wrote for 2 h: stale
    _write(storage, {"run_id": "r", "state": "training", "updated_at": NOW}, mtime=NOW - 7200)
    assert bucket_view(storage, "r", NOW, 1800).kind is Bucket.STALE
    # a status dated years ahead is only as fresh as its last write: it cannot keep an instance alive
    _write(storage, {"run_id": "r", "state": "training", "updated_at": NOW + 10 * 365 * 86400}, mtime=NOW - 7200)
    assert bucket_view(storage, "r", NOW, 1800).kind is Bucket.STALE
    # the same object judged by a home whose bucket clock reads 40 min less: live (the bucket's
    # now is all that moves the verdict, never this machine's)
    _write(storage, {"run_id": "r", "state": "training", "updated_at": NOW}, mtime=NOW - 600)
    assert bucket_view(storage, "r", NOW, 1800).kind is Bucket.LIVE
    assert bucket_view(storage, "r", NOW + 2400, 1800).kind is Bucket.STALE
    # the bucket's clock unknown this round: nothing is judged stale
    _write(storage, {"run_id": "r", "state": "training", "updated_at": NOW}, mtime=NOW - 7200)
    view = bucket_view(storage, "r", None, 1800)
    assert view.kind is Bucket.UNDATED and "clock" in view.reason
    assert decide("r", Local(), view).verdict is Verdict.DOUBT
    _write(storage, {"run_id": "r", "state": "done", "updated_at": NOW - 9 * 3600}, mtime=NOW - 9 * 3600)
    assert bucket_view(storage, "r", NOW, 1800).kind is Bucket.ENDED
    _write(storage, "[]")
    view = bucket_view(storage, "r", NOW, 1800)
    assert view.kind is Bucket.CORRUPT and "not an object" in view.reason
