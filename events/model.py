"""The events of the log and how they are written as JSON (CONTRACT.md, "The event log").

Beside the contract's fields every event written now carries `schema` (its version,
events/upcasting.py) and `prev` (its link in the flow's tamper-evidence chain, events/chain.py).
Reading upcasts any older version first, so the rest of the code sees one shape only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args
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
    "checked_event",
    "decode_event",
    "encode_event",
    "flow_document",
    "flow_document_json",
    "format_occurred",
    "occurred_text",
]

EventType = Literal["FlowCreated", "FlowUpdated", "FlowDeleted"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
_DIGEST = re.compile("[0-9a-f]{64}")
# A flow id as the service writes it; anything else is left to `UUID()` to accept or refuse.
_CANONICAL_UUID = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The fields every event holds as strings.
_STRING_FIELDS = ("id", "flow_id", "occurred")
# An event's time exactly as `format_occurred` writes it (what the writer writes): a year from
# 1000, seconds, and a fraction only when it is not zero, six digits.
_CANONICAL_TIME = re.compile(r"[1-9]\d{3}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!000000)\d{6})?Z")


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


def decode_event(payload: bytes, position: int) -> RecordedEvent:
    """Decode one log message; anything that is not a well-formed event raises MalformedEvent."""
    raw, written, occurred = checked_event(payload, position)
    event = Event(
        id=raw["id"],
        type=raw["type"],
        flow_id=raw["flow_id"],
        occurred=occurred,
        data=raw["data"],
        metadata=raw.get("metadata", {}),
        prev=raw.get("prev"),
    )
    return RecordedEvent(event=event, position=position, schema=written)


def checked_event(payload: bytes, position: int) -> tuple[dict[str, Any], int, datetime]:
    """What `decode_event` checks and reads, without building its objects (~3 µs an event,
    which the projector, reading every event, does without): the event's JSON object upcast
    to the current schema, the schema it was written in, and its time. Raises MalformedEvent
    as `decode_event` does.

    Each check raises where it fails, its reason formatted only then: every event read pays
    for the checks, none for the messages."""
    try:
        raw = jsoncodec.loads(payload)
    except ValueError as exc:
        raise MalformedEvent(position, f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedEvent(position, "not a JSON object")
    raw, written = upcast(raw, position)
    event_type = raw.get("type")
    if event_type not in EVENT_TYPES:
        raise MalformedEvent(position, f"unknown event type {event_type!r}")
    for key in _STRING_FIELDS:
        if not isinstance(raw.get(key), str):
            raise MalformedEvent(position, f"field {key!r} missing or not a string")
    try:
        if _CANONICAL_UUID.fullmatch(raw["flow_id"]) is None:  # the fast path: no UUID object
            UUID(raw["flow_id"])
        occurred = parse_datetime(raw["occurred"])
    except ValueError as exc:
        raise MalformedEvent(position, str(exc)) from None
    data: Any = raw.get("data")
    if not isinstance(data, dict):
        raise MalformedEvent(position, "field 'data' missing or not an object")
    if not isinstance(raw.get("metadata", {}), dict):
        raise MalformedEvent(position, "field 'metadata' is not an object")
    prev = raw.get("prev")
    if prev is not None and not _is_digest(prev):
        raise MalformedEvent(position, "field 'prev' is not a SHA-256 hex digest")
    _check_data(event_type, data, position)
    return raw, written, occurred


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


# `isinstance(item, str)` as a C callable: `all(map(...))` checks a list without a Python frame
# per item (every event read pays this).
_IS_STR = str.__instancecheck__


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(map(_IS_STR, value))


def _check_data(event_type: str, data: dict[str, Any], position: int) -> None:
    """The projector trusts these shapes, so a bad payload is caught here, not in SQL."""
    if event_type == "FlowCreated":
        if not isinstance(data.get("name"), str):
            raise MalformedEvent(position, "FlowCreated without a string name")
        if not _is_str_list(data.get("tags")):
            raise MalformedEvent(position, "FlowCreated tags not a string list")
        labels = data.get("labels")
        if labels is not None and not isinstance(labels, dict):
            raise MalformedEvent(position, "labels not an object")
    elif event_type == "FlowUpdated":
        if "tags" in data and not _is_str_list(data["tags"]):
            raise MalformedEvent(position, "FlowUpdated tags not a string list")
    elif not isinstance(data.get("name"), str):
        raise MalformedEvent(position, "FlowDeleted without a string name")


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


def occurred_text(text: str, occurred: datetime) -> str:
    """`format_occurred(occurred)` for an event's time `occurred`, read from `text`, the
    event's own: that text itself when it is already what `format_occurred` writes (what the
    writer writes), which saves the projector an aware `isoformat` (~2 µs) per event."""
    return text if _CANONICAL_TIME.fullmatch(text) else format_occurred(occurred)
