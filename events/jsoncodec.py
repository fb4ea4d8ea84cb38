"""JSON in and out of the service: orjson, except where orjson cannot be exact.

Prefect (Python's `json`) takes integers of any size: a label value of 2**70 is stored and read
back as that integer. orjson, which every hot path uses, cannot write an integer outside
[-2**63, 2**64) and, worse, *reads* one as a float, silently dropping digits. So:

* `dumps` is `orjson.dumps`, and only when orjson refuses a value (an integer beyond 64 bits)
  writes those integers as raw JSON fragments; the rest of the output is orjson's, byte for
  byte, so a re-encoded event or reply is identical however it was first written.
* `loads` is `orjson.loads` unless the text holds a run of 19 or more digits (the shortest
  number orjson could turn into a float); then the standard library reads it, exactly.
* `walk` visits a decoded document without recursion, for the checks hostile input needs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import orjson

__all__ = [
    "EncodeError",
    "dumps",
    "has_lone_surrogate",
    "loads",
    "may_be_inexact_in_orjson",
    "walk",
]

EncodeError = orjson.JSONEncodeError

# The widest range orjson writes; every integer outside it becomes a fragment.
_ORJSON_MIN, _ORJSON_MAX = -(2**63), 2**64 - 1
# 19 digits: -9223372036854775809 is the shortest number orjson reads as a float. A run inside a
# string or a fraction also matches; that only costs the slower exact parser. Looked for as the
# bytes `9` * 19 in the payload with every digit made a `9` and everything else a space: two C
# passes, ~6x faster than the equivalent regex `[0-9]{19}` (which every log message pays).
_LONG_DIGIT_RUN = b"9" * 19
_DIGITS_ONLY = bytes(0x39 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(value: Any) -> bytes:
    """`orjson.dumps`, with integers beyond 64 bits written exactly."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # Anything else orjson refuses (a lone surrogate, nesting past 254 levels) fails again
        # here, with orjson's own error.
        return orjson.dumps(_big_ints_as_fragments(value))


def loads(payload: bytes) -> Any:
    """Strict JSON (orjson's rules: UTF-8, no NaN, no lone surrogates), integers exact.

    Every failure is a `ValueError` (orjson's and the standard library's `JSONDecodeError`
    both are), so a caller has one thing to catch.
    """
    if not may_be_inexact_in_orjson(payload):
        return orjson.loads(payload)
    try:
        value = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if has_lone_surrogate(value):
        raise ValueError("lone surrogate in a JSON string")
    if any(isinstance(item, float) and not math.isfinite(item) for item, _ in walk(value)):
        raise ValueError("number is infinity when parsed as double")
    return value


def may_be_inexact_in_orjson(payload: bytes) -> bool:
    """Whether orjson might read a number of `payload` as a float it is not."""
    return _LONG_DIGIT_RUN in payload.translate(_DIGITS_ONLY)


def walk(value: Any) -> Iterator[tuple[Any, int]]:
    """Every value of a decoded document, and every object key, with its nesting depth (the
    document itself is at depth 1). Iterative: a hostile document cannot exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        yield item, depth
        if isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def has_lone_surrogate(value: Any) -> bool:
    """Whether a string of the document (key or value) holds half a UTF-16 pair: Python's
    `json` lets one through from `"\\ud800"`, but no UTF-8 text, so no database or reply, can
    carry it."""
    return any(isinstance(item, str) and _SURROGATE.search(item) for item, _ in walk(value))


def _big_ints_as_fragments(value: Any) -> Any:
    # Recursive, but only over what the service itself builds (events, replies, echoes of
    # request bodies the loader has already bounded in depth).
    if isinstance(value, dict):
        return {key: _big_ints_as_fragments(child) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints_as_fragments(child) for child in value]
    if _is_int(value) and not _ORJSON_MIN <= value <= _ORJSON_MAX:
        return orjson.Fragment(str(value).encode())
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
