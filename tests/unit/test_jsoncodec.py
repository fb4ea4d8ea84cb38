"""The service's JSON codec: orjson's bytes, with integers of any size kept exact."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from events import jsoncodec
from events.model import Event, decode_event, encode_event
from events.timefmt import parse_datetime

BIG = [2**63, 2**64, -(2**63) - 1, -(2**64) - 1, 10**40]


@pytest.mark.parametrize(
    "value", [{"a": [1, 1.5, 1e20, 1e-7, "x\x00", None, True]}, [], "é", 2**64 - 1, -(2**63)]
)
def test_what_orjson_writes_is_written_by_orjson(value: Any) -> None:
    assert jsoncodec.dumps(value) == orjson.dumps(value)


@pytest.mark.parametrize("big", BIG)
def test_integers_beyond_64_bits_are_written_exactly_and_the_rest_as_orjson(big: int) -> None:
    value = {"n": big, "f": 1e20, "t": True, "l": [1, "a"]}
    assert jsoncodec.dumps(value) == b'{"n":%d,"f":1e+20,"t":true,"l":[1,"a"]}' % big
    assert jsoncodec.loads(jsoncodec.dumps(value)) == value


def test_other_refusals_stay_orjsons() -> None:
    with pytest.raises(jsoncodec.EncodeError):
        jsoncodec.dumps({"n": 2**64, "s": "\ud800"})


@pytest.mark.parametrize(
    "payload",
    [b'{"n": 1e400}', b'{"n": NaN, "m": 12345678901234567890}', b'["\\ud800", 12345678901234567890]',
     b'\xef\xbb\xbf{"n": 12345678901234567890}', b"[" * 2000 + b"1234567890123456789" + b"]" * 2000],
)  # fmt: skip
def test_loads_is_strict_on_either_path(payload: bytes) -> None:
    with pytest.raises(ValueError):  # every failure is a ValueError, by design
        jsoncodec.loads(payload)


def test_an_event_with_a_big_label_round_trips_byte_for_byte() -> None:
    event = Event(
        id="e1",
        type="FlowCreated",
        flow_id="16f3851d-39da-4c5a-9d99-c10251805eb4",
        occurred=parse_datetime("2026-01-01T00:00:00Z"),
        data={"name": "big", "tags": [], "labels": {"n": 2**70, "f": 0.1}},
    )
    payload = encode_event(event)
    recorded = decode_event(payload, 7)
    assert recorded.event.data["labels"] == {"n": 2**70, "f": 0.1}
    assert encode_event(recorded.event) == payload
