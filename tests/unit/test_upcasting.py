"""Schema versions: old events are upcast when read, newer ones are refused with a reason, and
every version below the current one has an upcaster."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from events.contract.errors import MalformedEvent
from events.model import decode_event
from events.upcasting import SCHEMA_VERSION, UPCASTERS, upcast

V1_EVENT: dict[str, Any] = {
    "id": "11111111-1111-4111-8111-111111111111",
    "type": "FlowCreated",
    "flow_id": "22222222-2222-4222-8222-222222222222",
    "occurred": "2025-06-01T12:00:00Z",
    "data": {"name": "old", "tags": ["a"], "labels": None},
    "metadata": {"command_id": "c1"},
}


def test_every_older_version_has_an_upcaster() -> None:
    assert set(UPCASTERS) == set(range(1, SCHEMA_VERSION))


def test_a_v1_event_is_upcast_and_remembers_it_was_v1() -> None:
    raw, written = upcast(dict(V1_EVENT), 7)
    assert written == 1
    assert raw == {**V1_EVENT, "schema": SCHEMA_VERSION, "prev": None}


def test_an_explicit_schema_1_is_version_1() -> None:
    assert upcast({**V1_EVENT, "schema": 1}, 7)[1] == 1


def test_a_current_event_is_left_as_it_is() -> None:
    current = {**V1_EVENT, "schema": SCHEMA_VERSION, "prev": "ab" * 32}
    assert upcast(dict(current), 7) == (current, SCHEMA_VERSION)


def test_a_newer_version_is_refused_with_what_to_do() -> None:
    with pytest.raises(MalformedEvent) as caught:
        upcast({**V1_EVENT, "schema": SCHEMA_VERSION + 1}, 9)
    assert caught.value.position == 9
    assert "upgrade the flows service" in caught.value.reason


@pytest.mark.parametrize("schema", [0, -1, "2", 2.0, True, None, [2]])
def test_a_schema_that_is_not_a_version_number_is_malformed(schema: object) -> None:
    with pytest.raises(MalformedEvent, match="not a version number"):
        upcast({**V1_EVENT, "schema": schema}, 3)


def test_decoding_a_v1_payload_gives_the_current_shape() -> None:
    recorded = decode_event(orjson.dumps(V1_EVENT), 4)
    assert recorded.schema == 1
    assert recorded.event.prev is None
    assert recorded.event.data == V1_EVENT["data"]
    assert recorded.as_json() == {**V1_EVENT, "schema": 1, "prev": None, "position": 4}


@pytest.mark.parametrize("prev", ["ABCD" * 16, "ab" * 31, "zz" * 32, 5, {}])
def test_a_prev_that_is_not_a_sha256_hex_digest_is_malformed(prev: object) -> None:
    payload = orjson.dumps({**V1_EVENT, "schema": 2, "prev": prev})
    with pytest.raises(MalformedEvent, match="'prev'"):
        decode_event(payload, 5)
