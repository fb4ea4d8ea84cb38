"""The pure rules of the write side: `decide(state, command) -> events`, `evolve(state, event)`.

No I/O here. The writer (events/writer.py) loads what a decision needs from the log, calls these,
and appends the result under optimistic-concurrency guards.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from events.contract.errors import FlowNotFound
from events.model import Event, EventType, RecordedEvent, flow_document

__all__ = [
    "FlowState",
    "decide_create",
    "decide_delete",
    "decide_update",
    "evolve",
]


@dataclass(frozen=True, slots=True)
class FlowState:
    """A flow as its events make it. `version` is the position of its latest event."""

    flow_id: str
    name: str
    tags: list[str]
    labels: dict[str, Any] | None
    created: datetime
    updated: datetime
    version: int
    deleted: bool = False

    def document(self) -> dict[str, Any]:
        return flow_document(
            self.flow_id, self.created, self.updated, self.name, self.tags, self.labels
        )


def evolve(state: FlowState | None, recorded: RecordedEvent) -> FlowState | None:
    """Fold one event into a flow's state. Events of a deleted flow change nothing."""
    event = recorded.event
    if event.type == "FlowCreated":
        return FlowState(
            flow_id=event.flow_id,
            name=event.data["name"],
            tags=list(event.data.get("tags", [])),
            labels=event.data.get("labels"),
            created=event.occurred,
            updated=event.occurred,
            version=recorded.position,
        )
    if state is None or state.deleted:
        return state
    if event.type == "FlowUpdated":
        tags = list(event.data["tags"]) if "tags" in event.data else state.tags
        return replace(state, tags=tags, updated=event.occurred, version=recorded.position)
    return replace(state, deleted=True, updated=event.occurred, version=recorded.position)


def _event(
    event_id: str,
    event_type: EventType,
    flow_id: str,
    now: datetime,
    data: dict[str, Any],
    command_id: str,
) -> Event:
    return Event(
        id=event_id,
        type=event_type,
        flow_id=flow_id,
        occurred=now,
        data=data,
        metadata={"command_id": command_id},
    )


def decide_create(
    *,
    name: str,
    tags: list[str],
    labels: dict[str, Any] | None,
    flow_id: str,
    event_id: str,
    now: datetime,
    command_id: str,
) -> Event:
    """A create whose name is free: the flow is born with exactly what was asked."""
    data = {"name": name, "tags": list(tags), "labels": labels}
    return _event(event_id, "FlowCreated", flow_id, now, data, command_id)


def decide_update(
    *,
    current: EventType | None,
    flow_id: str,
    tags: list[str] | None,
    event_id: str,
    now: datetime,
    command_id: str,
) -> Event:
    """Only tags change; `tags` None leaves them alone but still records the update (Prefect
    bumps `updated` on an empty PATCH)."""
    if current is None or current == "FlowDeleted":
        raise FlowNotFound()
    data: dict[str, Any] = {} if tags is None else {"tags": list(tags)}
    return _event(event_id, "FlowUpdated", flow_id, now, data, command_id)


def decide_delete(
    *,
    current: EventType | None,
    flow_id: str,
    name: str,
    event_id: str,
    now: datetime,
    command_id: str,
) -> Event:
    if current is None or current == "FlowDeleted":
        raise FlowNotFound()
    return _event(event_id, "FlowDeleted", flow_id, now, {"name": name}, command_id)
