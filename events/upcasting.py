"""Schema versions of the event JSON, and the upcasters that bring an old event to the current
shape when it is read.

An event's `schema` field says which version it was written in; events written before versions
existed have no such field and are version 1. The log is never rewritten: every version ever
written stays readable, because reading runs the stored JSON through one upcaster per version
step (1 -> 2 -> ... -> SCHEMA_VERSION) before the event is decoded.

Adding a version: bump SCHEMA_VERSION, register the upcaster from the previous version here, and
record events of the new version in tests/corpus (the old ones there must keep replaying alike).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from events.contract.errors import MalformedEvent

__all__ = ["SCHEMA_VERSION", "UPCASTERS", "upcast"]

# The version this code writes.
SCHEMA_VERSION = 2

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 2 added the tamper-evidence chain (`prev`, events/chain.py). A version-1 event
    was written without a link, so it gets none: its flow's chain starts at its first
    version-2 event."""
    return {**raw, "schema": 2, "prev": None}


# UPCASTERS[n] turns a version-n event into a version n+1 event.
UPCASTERS: dict[int, Upcaster] = {1: _v1_to_v2}


def upcast(raw: dict[str, Any], position: int) -> tuple[dict[str, Any], int]:
    """The event JSON at SCHEMA_VERSION, and the version it was written in."""
    written = raw.get("schema", 1)
    if isinstance(written, bool) or not isinstance(written, int) or written < 1:
        raise MalformedEvent(position, f"field 'schema' is {written!r}, not a version number")
    if written > SCHEMA_VERSION:
        raise MalformedEvent(
            position,
            f"written in event schema {written}, newer than this code reads ({SCHEMA_VERSION}); "
            "upgrade the flows service that reads it",
        )
    version = written
    while version < SCHEMA_VERSION:
        raw = UPCASTERS[version](raw)
        version += 1
    return raw, written
