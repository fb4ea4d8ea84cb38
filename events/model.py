"""The events of the log and how they are written as JSON (CONTRACT.md, "The event log").

Beside the contract's fields every event written now carries `schema` (its version,
events/upcasting.py) and `prev` (its link in the flow's tamper-evidence chain, events/chain.py).
Reading upcasts any older version first, so the rest of the code sees one shape only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args
from uuid import UUID

from events import jsoncodec
from events.contract.errors import MalformedEvent
from events.timefmt import format_datetime, parse_datetime
from events.upcasting import SCHEMA_VERSION, upcast

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventType",
    "RecordedEvent",
    "decode_event",
    "encode_event",
    "flow_document",
    "flow_document_json",
    "format_occurred",
]

EventType = Literal["FlowCreated", "FlowUpdated", "FlowDeleted"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
_DIGEST = re.compile("[0-9a-f]{64}")
# A flow id as the service writes it; anything else is left to `UUID()` to accept or refuse.
_CANONICAL_UUID = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to one flow. Past tense; never changed once appended."""

    id: str
    type: EventType
    flow_id: str
    occurred: datetime
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    # SHA-256 hex of the previous message on the flow's subject; None for the first (or for an
    # event written before the chain existed). Set by the writer at append time.
    prev: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The event as written now: at the current schema version."""
        return {
            "id": self.id,
            "type": self.type,
            "flow_id": self.flow_id,
            "occurred": format_datetime(self.occurred),
            "data": self.data,
            "metadata": self.metadata,
            "schema": SCHEMA_VERSION,
            "prev": self.prev,
        }


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as read back from the log, with its position (the stream sequence)."""

    event: Event
    position: int
    # The schema version the event was written in (the event itself is upcast to the current
    # one); version 1 events carry no chain link.
    schema: int = SCHEMA_VERSION

    def as_json(self) -> dict[str, Any]:
        return {**self.event.as_json(), "schema": self.schema, "position": self.position}


def encode_event(event: Event) -> bytes:
    return jsoncodec.dumps(event.as_json())


def _require(condition: bool, position: int, reason: str) -> None:
    if not condition:
        raise MalformedEvent(position, reason)


def decode_event(payload: bytes, position: int) -> RecordedEvent:
    """Decode one log message; anything that is not a well-formed event raises MalformedEvent."""
    try:
        raw = jsoncodec.loads(payload)
    except ValueError as exc:
        raise MalformedEvent(position, f"not JSON: {exc}") from None
    _require(isinstance(raw, dict), position, "not a JSON object")
    raw, written = upcast(raw, position)
    event_type = raw.get("type")
    _require(event_type in EVENT_TYPES, position, f"unknown event type {event_type!r}")
    for key in ("id", "flow_id", "occurred"):
        _require(isinstance(raw.get(key), str), position, f"field {key!r} missing or not a string")
    try:
        if _CANONICAL_UUID.fullmatch(raw["flow_id"]) is None:  # the fast path: no UUID object
            UUID(raw["flow_id"])
        occurred = parse_datetime(raw["occurred"])
    except ValueError as exc:
        raise MalformedEvent(position, str(exc)) from None
    data: Any = raw.get("data")
    metadata: Any = raw.get("metadata", {})
    _require(isinstance(data, dict), position, "field 'data' missing or not an object")
    _require(isinstance(metadata, dict), position, "field 'metadata' is not an object")
    prev = raw.get("prev")
    _require(prev is None or _is_digest(prev), position, "field 'prev' is not a SHA-256 hex digest")
    _check_data(cast(EventType, event_type), data, position)
    event = Event(
        id=raw["id"],
        type=cast(EventType, event_type),
        flow_id=raw["flow_id"],
        occurred=occurred,
        data=data,
        metadata=metadata,
        prev=prev,
    )
    return RecordedEvent(event=event, position=position, schema=written)


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


# `isinstance(item, str)` as a C callable: `all(map(...))` checks a list without a Python frame
# per item (every event read pays this).
_IS_STR = str.__instancecheck__


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(map(_IS_STR, value))


def _check_data(event_type: EventType, data: dict[str, Any], position: int) -> None:
    """The projector trusts these shapes, so a bad payload is caught here, not in SQL."""
    if event_type == "FlowCreated":
        _require(isinstance(data.get("name"), str), position, "FlowCreated without a string name")
        _require(_is_str_list(data.get("tags")), position, "FlowCreated tags not a string list")
        labels = data.get("labels")
        _require(labels is None or isinstance(labels, dict), position, "labels not an object")
    elif event_type == "FlowUpdated":
        if "tags" in data:
            _require(_is_str_list(data["tags"]), position, "FlowUpdated tags not a string list")
    else:
        _require(isinstance(data.get("name"), str), position, "FlowDeleted without a string name")


def flow_document(
    flow_id: str,
    created: datetime,
    updated: datetime,
    name: str,
    tags: list[str],
    labels: dict[str, Any] | None,
) -> dict[str, Any]:
    """A flow as Prefect's `schemas.core.Flow` serialises it, keys in Prefect's order."""
    return {
        "id": flow_id,
        "created": format_occurred(created),
        "updated": format_occurred(updated),
        "name": name,
        "tags": tags,
        "labels": labels,
    }


def flow_document_json(
    flow_id: str,
    created: str,
    updated: str,
    name: str,
    tags: list[str],
    labels: dict[str, Any] | None,
) -> bytes:
    """`flow_document` as the bytes the read model stores, from times already formatted by
    `format_occurred` (a projector formats each event's time once, not once per column)."""
    return jsoncodec.dumps(
        {
            "id": flow_id,
            "created": created,
            "updated": updated,
            "name": name,
            "tags": tags,
            "labels": labels,
        }
    )


def format_occurred(value: datetime) -> str:
    """`format_datetime`, faster for the aware UTC times `decode_event` gives (the projector
    formats two per event): `isoformat` is C, `strftime` is not. Any other value, and years
    before 1000 (which `strftime` writes unpadded), take `format_datetime` itself."""
    if value.tzinfo is not UTC or value.year < 1000:
        return format_datetime(value)
    text = value.isoformat()  # 2026-12-02T16:49:01[.123456]+00:00
    return text[:-6] + "Z"
