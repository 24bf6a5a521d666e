"""The bounded JSON parser every untrusted JSON goes through."""

from __future__ import annotations

import pytest

from comfy_lora_cloud import jsonsafe
from comfy_lora_cloud.jsonsafe import UnsafeJson, loads


def test_plain_json_parses_as_the_standard_parser_does():
    assert loads('{"a": [1, 2.5, "x", null, true], "b": {"c": -3}}') == \
        {"a": [1, 2.5, "x", None, True], "b": {"c": -3}}
    assert loads(b'{"caf\\u00e9": "\xc3\xa9"}') == {"café": "é"}


@pytest.mark.parametrize("text, why", [
    ("1" * 401, "digits"),
    ("-" + "9" * 21, "digits"),
    ("1e400", "out of range"),
    ("-1e999", "out of range"),
    ("NaN", "not JSON"),
    ("[Infinity]", "not JSON"),
    ("[" * 50_000 + "]" * 50_000, "deeper"),
    ("[" * 65 + "]" * 65, "deeper"),
    ("{", "not valid JSON"),
])
def test_what_our_arithmetic_or_recursion_cannot_take_is_refused(text, why):
    with pytest.raises(UnsafeJson, match=why):
        loads(text)


def test_a_refusal_is_a_value_error_so_existing_handlers_catch_it():
    with pytest.raises(ValueError):
        loads("[" * 10_000)


def test_bounds_are_the_callers_to_set():
    assert loads("[[[]]]", max_depth=3) == [[[]]]
    with pytest.raises(UnsafeJson, match="deeper than 2"):
        loads("[[[]]]", max_depth=2)
    with pytest.raises(UnsafeJson, match="bytes"):
        loads(b" " * 11 + b"1", max_bytes=10)
    with pytest.raises(UnsafeJson, match="UTF-8"):
        loads(b'"\xff"')


def test_largest_integer_kept_converts_to_a_finite_float():
    biggest = int("9" * jsonsafe.MAX_INT_DIGITS)
    assert loads(str(biggest)) == biggest
    assert float(biggest) < float("inf")


def test_depth_counts_without_recursion():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert jsonsafe.depth(deep) == 5001
    assert jsonsafe.depth({"a": 1}) == 1 and jsonsafe.depth(3) == 0


def test_comfyui_seeds_fit():
    assert loads('{"seed": 18446744073709551615}') == {"seed": 2**64 - 1}
