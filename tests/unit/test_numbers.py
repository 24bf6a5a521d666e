"""Numbers stay numbers: every number from a body, a file, the bucket or a flag is range-checked
before arithmetic, and every JSON we did not write is parsed within jsonsafe's bounds. Each case
here used to end in an OverflowError, a RecursionError or a TypeError ("a bug", a 500)."""

from __future__ import annotations

import json
import struct

import pytest

from comfy_lora_cloud.comfy.routes.sessions import session_request
from comfy_lora_cloud.comfy.routes.runs import train_request
from comfy_lora_cloud.errors import ConfigError, CorruptRecord, DatasetError
from comfy_lora_cloud.models import MAX_EXACT_INT, check_number, is_number
from comfy_lora_cloud.service.library.files import parse_safetensors_header
from comfy_lora_cloud.service.runs import TrainRequest
from comfy_lora_cloud.service.runs.train_config import editor_overrides
from comfy_lora_cloud.service.sessions import SessionRequest
from comfy_lora_cloud.service.templates.workflow_api import parse_assignment, parse_workflow
from comfy_lora_cloud.storage.base import parse_json_record
from comfy_lora_cloud.storage.local import LocalStorage
from comfy_lora_cloud.training.lora_meta import from_header, read_safetensors_metadata
from comfy_lora_cloud.training.presets import load_preset
from comfy_lora_cloud.training.spec import RunSpec, load_spec
from comfy_lora_cloud.training.status import read_events

HUGE = 10 ** 400
DEEP = "[" * 50_000 + "]" * 50_000


# ---- the one range check ------------------------------------------------------------------------
@pytest.mark.parametrize("value, ok", [
    (1, True), (2.5, True), (MAX_EXACT_INT, True), (MAX_EXACT_INT + 1, False), (HUGE, False), (-HUGE, False),
    (float("inf"), False), (float("nan"), False), (True, False), ("3", False), (None, False),
])
def test_is_number(value, ok):
    assert is_number(value) is ok


def test_check_number_names_the_field_and_the_range_and_never_prints_a_huge_value():
    with pytest.raises(ConfigError, match=r"rank must be a whole number at least 1 and at most 512, not an integer "
                                          r"of 401 digits"):
        check_number("rank", HUGE, 1, 512, integer=True)
    with pytest.raises(ConfigError, match="not an integer of over 1200 digits"):
        check_number("rank", 10 ** 5000, 1, 512)
    with pytest.raises(ConfigError, match="above 0"):
        check_number("usd", 0, 0, 10, above=True)
    with pytest.raises(ConfigError, match="whole number"):
        check_number("n", 2.5, 0, 10, integer=True)
    assert check_number("n", 3.0, 0, 10, integer=True) == 3


# ---- overrides: --set and the config editor --------------------------------------------------------
@pytest.mark.parametrize("overrides, words", [
    ({"network_dim": HUGE}, "401 digits is not a finite number in range"),
    ({"learning_rate": HUGE}, "401 digits"),  # an int for a float: range first, never float(10**400)
    ({"seed": 10 ** 17}, "18 digits"),
    ({"max_grad_norm": 1e300}, "is outside"),  # a key with a range
])
def test_override_numbers_are_range_checked_before_any_conversion(overrides, words):
    with pytest.raises(ConfigError, match=words):
        load_preset("character", 24, overrides)


def test_an_override_without_a_range_is_held_to_what_a_float_holds_exactly():
    assert load_preset("character", 24, {"lr_scheduler_power": 2}).training["lr_scheduler_power"] == 2
    with pytest.raises(ConfigError, match="not a finite number in range"):
        load_preset("character", 24, {"lr_scheduler_power": 2 ** 60})


@pytest.mark.parametrize("value", [HUGE, float("inf"), True, "16"])
def test_the_config_editor_refuses_numbers_it_cannot_use(value):
    overrides, errors = editor_overrides({"rank": value})
    assert overrides == {} and errors and errors[0].field == "rank" and "must be a number" in errors[0].message


# ---- requests: bodies, flags and node inputs ------------------------------------------------------
@pytest.mark.parametrize("body, words", [
    ({"max_run_usd": HUGE}, "max_run_usd must be a number above 0 and at most 100000, not an integer of 401 digits"),
    ({"max_run_usd": 1e300}, "max_run_usd must be above 0"),
    ({"max_dph": True}, "max_dph must be a number"),
    ({"max_dph": 2 ** 53 + 1}, "max_dph must be a number"),
    ({"max_hours": 1e-300}, "max_hours must be at least 0.0166667"),  # at least a minute
    ({"max_hours": "6"}, "max_hours must be a number"),
    ({"interruptible": 1}, "interruptible must be true or false"),
])
def test_train_request_bodies_are_range_checked(body, words):
    with pytest.raises(ConfigError, match=words):
        train_request({"dataset": "cats", **body})


@pytest.mark.parametrize("fields, words", [
    ({"max_attempts": HUGE}, "max_attempts must be a whole number at least 1 and at most 50"),
    ({"on_demand_after": 2.5}, "on_demand_after must be a whole number"),
    ({"resume_wait_minutes": float("inf")}, "resume_wait_minutes must be a number"),
    ({"vram_gb": 1e9}, "vram_gb must be at least 1 and at most 1024"),
    ({"max_hours": 1e-300}, "max_hours must be at least"),
    ({"overrides": [1]}, "overrides must be an object"),
])
def test_train_requests_from_flags_and_nodes_are_range_checked(fields, words):
    with pytest.raises(ConfigError, match=words):
        TrainRequest(dataset="cats", **fields).checked()


def test_train_request_zero_hours_still_means_the_settings():
    assert TrainRequest(dataset="cats", max_hours=0, max_run_usd=0).checked().max_hours == 0


@pytest.mark.parametrize("body, words", [
    ({"vram_gb": HUGE}, "vram_gb must be a number above 0 and at most 1024, not an integer of 401 digits"),
    ({"idle_minutes": 1e300}, "idle_minutes must be above 0"),
    ({"idle_minutes": False}, "idle_minutes must be a number"),
    ({"max_hours": 0}, "max_hours must be above 0"),
    ({"max_hours": MAX_EXACT_INT * 4}, "max_hours must be a number"),
])
def test_session_request_bodies_are_range_checked(body, words):
    with pytest.raises(ConfigError, match=words):
        session_request(body)


def test_session_requests_from_flags_are_range_checked():
    with pytest.raises(ConfigError, match="max_hours must be above 0"):
        SessionRequest(max_hours=-1.0).checked()
    with pytest.raises(ConfigError, match="a session is for generating"):
        SessionRequest(max_hours=100).checked()
    with pytest.raises(ConfigError, match="vram_gb must be a number"):
        SessionRequest(vram_gb=HUGE).checked()


# ---- records from the bucket and files from anyone --------------------------------------------------
@pytest.mark.parametrize("body, words", [
    (DEEP, "nested deeper"),
    ('{"run_id": "r1", "vram_gb": ' + "9" * 401 + "}", "401 digits"),
    ('{"x": 1e400}', "out of range"),
    ('{"x": NaN}', "NaN is not JSON"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_bucket_records_are_parsed_within_bounds(body, words):
    with pytest.raises(CorruptRecord, match=words):
        parse_json_record(body.encode() if isinstance(body, str) else body, "runs/r1/x.json")


def _spec(**fields) -> dict:
    return {**RunSpec(run_id="r1", dataset="cats", lora_type="character", lora_name="cats").to_dict(), **fields}


@pytest.mark.parametrize("body, words", [
    (DEEP, "nested deeper"),
    (json.dumps(_spec())[:-1] + ', "vram_gb": ' + "9" * 401 + "}", "401 digits"),
    (json.dumps(_spec(max_hours=1e300)), "max_hours must be above 0 and at most 744"),
    (json.dumps(_spec(vram_gb=True)), "vram_gb must be a number"),
    (json.dumps(_spec(status_interval=-1)), "status_interval"),
    (json.dumps([1, 2]), "not an object"),
])
def test_a_spec_a_host_wrote_is_a_corrupt_record_never_a_crash(tmp_path, body, words):
    storage = LocalStorage(tmp_path / "b")
    storage.write_bytes("runs/r1/spec.json", body.encode())
    with pytest.raises(CorruptRecord, match=words):
        load_spec(storage, env={}, run_id="r1")


def test_a_spec_in_the_environment_is_parsed_within_bounds():
    with pytest.raises(ConfigError, match="nested deeper"):
        load_spec(None, env={"LORA_CLOUD_RUN_SPEC": DEEP})


def test_events_lines_past_the_bounds_are_skipped(tmp_path):
    storage = LocalStorage(tmp_path / "b")
    good = json.dumps({"t": 1, "kind": "state"})
    storage.write_bytes("runs/r1/events.jsonl", "\n".join([DEEP, '{"t": 1e400, "kind": "x"}', good]).encode())
    assert read_events(storage, "r1") == [{"t": 1, "kind": "state"}]


def _safetensors(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize("header, words", [
    (b'{"__metadata__": {"x": ' + DEEP.encode() + b"}}", "nested deeper"),
    (b'{"t": {"data_offsets": [0, ' + b"9" * 401 + b"]}}", "401 digits"),
])
def test_safetensors_headers_past_the_bounds_are_clear_errors(tmp_path, header, words):
    with pytest.raises(DatasetError, match=words):
        parse_safetensors_header(_safetensors(header))
    path = tmp_path / "x.safetensors"
    path.write_bytes(_safetensors(header))
    with pytest.raises(ValueError, match=words):
        read_safetensors_metadata(path)


def test_our_header_fields_past_the_bounds_are_skipped():
    assert from_header({"lora_cloud.cost_usd": "9" * 401, "lora_cloud.steps": "12"}) == {"steps": 12}


# ---- workflows ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    (DEEP, "nested deeper"),
    ('{"1": {"class_type": "KSampler", "inputs": {"seed": ' + "9" * 401 + "}}}", "401 digits"),
])
def test_workflow_text_past_the_bounds_is_a_config_error(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_workflow(text)


def test_a_decoded_workflow_nested_too_deep_is_refused():
    deep: dict = {"class_type": "X", "inputs": {}}
    node = deep["inputs"]
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ConfigError, match="nested deeper"):
        parse_workflow({"1": deep})


def test_a_set_value_past_the_bounds_is_kept_as_text():
    assert parse_assignment("3.seed=" + "9" * 401) == ("3", "seed", "9" * 401)
    assert parse_assignment("3.seed=42") == ("3", "seed", 42)
