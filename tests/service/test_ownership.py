"""ownership.decide (who owns a labelled instance) as a table, and bucket_view's freshness on the
bucket's clock, over a real local bucket."""

from __future__ import annotations

import json
import os

import pytest

from comfy_lora_cloud.errors import StorageError
from comfy_lora_cloud.models import Run, RunState, RunStatus, validate_name
from comfy_lora_cloud.providers.base import (bucket_tag, run_id_from_label, run_label, session_id_from_label,
                                             session_label, with_bucket_tag)
from comfy_lora_cloud.service.money.ownership import (Attribution, Bucket, BucketFacts, BucketView, Local, Verdict,
                                                attribute, bucket_view, decide, launch_bucket_id, own_bucket_ids)
from comfy_lora_cloud.service.sessions import new_session_id
from comfy_lora_cloud.service.home.state import StateStore
from comfy_lora_cloud.storage.identity import ID_KEY, ensure_bucket_id
from comfy_lora_cloud.storage.layout import run_key
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.launch import new_run_id

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


# ---- bucket tags in ids, and whose an instance is ---------------------------------------------------

BID = "0123456789ab"


@pytest.mark.parametrize("lora_name", ["cats", "Café du Monde", "", "-" * 80, "日本語", "a..b/c"])
def test_new_ids_carry_the_bucket_and_stay_ids_every_version_reads(lora_name):
    """A tagged id is still a valid name: an older home reads ``lora-cloud:<id>`` as run <id> and
    finds it in its bucket, never as "a label no run could have" (which it would destroy)."""
    from comfy_lora_cloud.service.runs.control import _id_time

    for ident, label, parse in ((new_run_id(lora_name, lambda: NOW, bucket_id=BID), run_label, run_id_from_label),
                                (new_session_id(lambda: NOW, bucket_id=BID), session_label, session_id_from_label)):
        assert validate_name(ident) == ident and ident.endswith(f".b{BID}")
        assert parse(label(ident)) == ident and bucket_tag(ident) == BID
    assert _id_time(new_run_id(lora_name, lambda: NOW, bucket_id=BID)) == NOW  # launch order still read
    assert bucket_tag(new_run_id(lora_name, lambda: NOW)) is None


@pytest.mark.parametrize("ident, tag", [
    ("cats-20261207-134500-abcd", None),  # made before bucket ids
    (f"cats-20261207-134500-abcd.b{BID}", BID),
    (f"session-20261207-134500-abcd.b{BID}", BID),
    ("x.b0123456789abc", None),  # 13 digits: not a tag
    ("x.b0123456789AB", None),
    (f"x.b{BID}.y", None),
    (None, None),
])
def test_bucket_tag(ident, tag):
    assert bucket_tag(ident) == tag
    if tag:
        assert with_bucket_tag(ident[:-len(tag) - 2], tag) == ident


def _never() -> bool:
    raise AssertionError("a tagged id is attributed without reading anything")


OURS_FACTS = BucketFacts("gs://mine", frozenset({BID}))


@pytest.mark.parametrize("ident, facts, known, recorded, kind", [
    (None, OURS_FACTS, _never, _never, Attribution.NONE),  # "lora-cloud:"
    ("../../etc", OURS_FACTS, _never, _never, Attribution.NONE),
    ("a" * 101, OURS_FACTS, _never, _never, Attribution.NONE),
    (f"r.b{BID}", OURS_FACTS, _never, _never, Attribution.OURS),
    ("r.bfedcba987654", OURS_FACTS, _never, _never, Attribution.FOREIGN),
    (f"r.b{BID}", BucketFacts("/home/u/bucket"), _never, _never, Attribution.FOREIGN),  # a bucket with no id yet
    (f"r.b{BID}", BucketFacts("gs://mine", id_problem="bucket unreachable"), _never, _never, Attribution.UNKNOWN),
    ("r", OURS_FACTS, lambda: True, _never, Attribution.OURS),  # launched here before bucket ids
    ("r", OURS_FACTS, lambda: False, lambda: True, Attribution.OURS),  # another home of this bucket
    ("r", OURS_FACTS, lambda: None, lambda: True, Attribution.OURS),  # a damaged store: the bucket knows it
    ("r", OURS_FACTS, lambda: False, lambda: False, Attribution.UNKNOWN),  # maybe another bucket's
    ("r", OURS_FACTS, lambda: None, lambda: False, Attribution.UNKNOWN),
])
def test_attribute(ident, facts, known, recorded, kind):
    assert attribute("run", ident, facts, known_here=known, recorded=recorded).kind is kind


def test_attribute_an_unreadable_bucket_is_doubt():
    def unreadable() -> bool:
        raise StorageError("503")

    got = attribute("run", "r", OURS_FACTS, known_here=lambda: False, recorded=unreadable)
    assert got.kind is Attribution.UNKNOWN and "cannot be read" in got.why


def test_the_ids_a_bucket_answers_to_outlive_its_id_object(tmp_path):
    storage, state = LocalStorage(tmp_path / "b"), StateStore(tmp_path / "state.db")
    assert own_bucket_ids(storage, state) == (frozenset(), "")  # no id yet: a guard pass makes none
    assert storage.exists(ID_KEY) is False
    first = launch_bucket_id(storage, state)
    assert own_bucket_ids(storage, state) == (frozenset({first}), "")
    storage.delete(ID_KEY)  # deleted: the home that read it puts it back
    assert own_bucket_ids(storage, state) == (frozenset({first}), "") and ensure_bucket_id(storage) == first
    storage.delete(ID_KEY)  # rewritten by someone else (a rented host can write the bucket)
    other = ensure_bucket_id(storage, prefer="fedcba987654")
    ids, problem = own_bucket_ids(storage, state)
    assert ids == frozenset({first})  # this home's runs stay its own; the new id is not adopted
    assert other in problem and first in problem
    assert launch_bucket_id(storage, state) == first  # and its launches stay guarded by it
    tagged = BucketFacts("b", ids, problem)
    got = attribute("run", with_bucket_tag("r", other), tagged, known_here=lambda: False, recorded=lambda: False)
    assert got.kind is Attribution.UNKNOWN  # another bucket's id copied in: kept, never judged as ours
    # a bucket that cannot be read: the ids this home read from it before
    (tmp_path / "b").rename(tmp_path / "gone")
    (tmp_path / "b").write_text("not a folder")
    assert own_bucket_ids(storage, state) == (frozenset({first}), "")
    ids, problem = own_bucket_ids(storage, StateStore(tmp_path / "fresh.db"))
    assert ids == frozenset() and "cannot be read" in problem
