"""The limits a run was launched under, recorded in its spec.json and read back by a home that
did not launch it: range-checked, never looser than the hard maxima, hostile values refused."""

from __future__ import annotations

import json

import pytest

from comfy_lora_cloud.errors import ConfigError, CorruptRecord
from comfy_lora_cloud.settings import MAX_DPH, MAX_RUN_HOURS, MAX_RUN_USD
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.spec import MAX_SPEC_BYTES, RunLimits, RunSpec, read_limits

GOOD = {"max_dph": 5.0, "max_run_usd": 20.0, "max_hours": 6.0}


@pytest.fixture
def storage(tmp_path):
    return LocalStorage(tmp_path / "bucket")


def spec_with(storage, run_id: str, body) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    storage.write_bytes(f"runs/{run_id}/spec.json", raw)


def test_a_spec_records_its_limits_and_they_read_back(storage):
    RunSpec(run_id="r1", dataset="cats", lora_type="character", lora_name="cats", limits=GOOD).save(storage)
    assert read_limits(storage, "r1") == RunLimits(5.0, 20.0, 6.0)


def test_no_spec_or_no_limits_is_none(storage):
    assert read_limits(storage, "absent") is None
    RunSpec(run_id="old", dataset="cats", lora_type="character", lora_name="cats").save(storage)  # an older launch
    assert read_limits(storage, "old") is None


def test_a_dollar_limit_that_was_off_reads_as_the_hard_maximum(storage):
    spec_with(storage, "off", {"run_id": "off", "limits": {"max_dph": 0, "max_run_usd": 0, "max_hours": 744}})
    assert read_limits(storage, "off") == RunLimits(MAX_DPH, MAX_RUN_USD, MAX_RUN_HOURS)


@pytest.mark.parametrize("limits", [
    {**GOOD, "max_dph": MAX_DPH + 1},  # looser than any home may set
    {**GOOD, "max_run_usd": 10 ** 15},
    {**GOOD, "max_hours": MAX_RUN_HOURS * 2},
    {**GOOD, "max_hours": 0},  # no "run forever", no limit under a minute
    {**GOOD, "max_dph": -1},
    {**GOOD, "max_dph": "5"},
    {**GOOD, "max_dph": True},
    {**GOOD, "max_dph": None},
    {"max_dph": 5.0, "max_run_usd": 20.0},  # a limit missing
    [5, 20, 6],
    "unlimited",
])
def test_hostile_limits_are_refused(storage, limits):
    spec_with(storage, "r1", {"run_id": "r1", "limits": limits})
    with pytest.raises(CorruptRecord, match="limits"):
        read_limits(storage, "r1")


@pytest.mark.parametrize("body", [
    b'{"limits": {"max_dph": 1e400, "max_run_usd": 1, "max_hours": 1}}',  # past what a float holds
    b'{"limits": {"max_dph": 1, "max_run_usd": 1000000000000000000000000000000, "max_hours": 1}}',
    b'{"limits": {"max_dph": NaN, "max_run_usd": 1, "max_hours": 1}}',
    b"[" * 50_000 + b"]" * 50_000,
    b"not json",
    b"[1, 2]",
])
def test_a_spec_that_is_not_one_is_refused(storage, body):
    spec_with(storage, "r1", body)
    with pytest.raises(CorruptRecord):
        read_limits(storage, "r1")


def test_a_huge_spec_is_refused_before_it_is_read(storage):
    spec_with(storage, "r1", b" " * (MAX_SPEC_BYTES + 1) + b"{}")
    with pytest.raises(CorruptRecord, match="more than a record may be"):
        read_limits(storage, "r1")


def test_a_launch_cannot_record_limits_out_of_range():
    with pytest.raises(ConfigError, match="max_dph"):
        RunSpec(run_id="r1", dataset="cats", lora_type="character", lora_name="cats", limits={**GOOD, "max_dph": 1e9})
