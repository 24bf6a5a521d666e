"""JSON from anyone we do not control, parsed within bounds.

Request bodies, workflows, ``spec.json`` and ``status.json`` (a rented host writes the bucket),
safetensors headers and a remote ComfyUI's answers all come through :func:`loads`, which refuses
what the standard parser lets through and our arithmetic cannot take:

* nesting deeper than ``max_depth`` (the C parser recurses: 50 000 ``[`` is a RecursionError, and a
  few hundred levels still break every recursive walk after it);
* integers with more than :data:`MAX_INT_DIGITS` digits (``float(10**400)`` raises OverflowError
  in the middle of a budget check);
* ``NaN``, ``Infinity`` and floats that overflow to infinity (they compare false with everything,
  so a limit of NaN is no limit);
* more than ``max_bytes`` of text.

Every refusal is an :class:`UnsafeJson`, a ``ValueError``: the ``except ValueError`` a caller
already has for malformed JSON covers it, and the caller turns it into its own error (a 400 for a
body, :class:`~.errors.CorruptRecord` for a record, :class:`~.errors.ComfyUIError` for an answer).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
MAX_INT_DIGITS = 20  # ComfyUI's seeds go to 2**64 - 1; every count, size and id we handle is shorter
MAX_BYTES = 16 * 1024 * 1024


class UnsafeJson(ValueError):
    """JSON that is malformed or outside the bounds :func:`loads` keeps."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise UnsafeJson(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJson(f"a number out of range ({text[:24]})")
    return value


def _constant(name: str) -> Any:
    raise UnsafeJson(f"{name} is not JSON")


def depth(value: Any) -> int:
    """How deeply lists and dicts nest in a parsed value (0 for a scalar); iterative, so any
    depth is measured without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> Any:
    """``data`` parsed as JSON within the bounds above; :class:`UnsafeJson` otherwise (bytes must
    be UTF-8)."""
    if len(data) > max_bytes:
        raise UnsafeJson(f"{len(data)} bytes of JSON (at most {max_bytes})")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeJson("not UTF-8") from None
    try:
        value = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except UnsafeJson:
        raise
    except RecursionError:
        raise UnsafeJson(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise UnsafeJson(f"not valid JSON ({str(exc)[:80]})") from None
    if depth(value) > max_depth:
        raise UnsafeJson(f"nested deeper than {max_depth} levels")
    return value
