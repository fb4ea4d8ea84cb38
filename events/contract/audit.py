"""The audit subjects' request bodies (`P.audit.history`, `P.audit.events`, `P.audit.stats`),
parsed with Prefect's error shapes like every other body."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from events.contract.bodies import validate_body
from events.contract.commands import FlowId
from events.model import EventType

__all__ = [
    "EventsRequest",
    "HistoryRequest",
    "StatsRequest",
    "parse_events",
    "parse_history",
    "parse_stats",
]


class HistoryRequest(BaseModel):
    """A flow's events, oldest first. Other keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: FlowId


class EventsRequest(BaseModel):
    """A page of the log's events after a position, optionally of one flow or some types."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    after: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    flow_id: FlowId | None = None
    types: list[EventType] | None = None


class StatsRequest(BaseModel):
    """The health report, listing up to `parked_limit` parked messages (counting all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    parked_limit: Annotated[int, Field(ge=0, le=1000)] = 100


def parse_history(body: Any) -> HistoryRequest:
    request: HistoryRequest = validate_body(HistoryRequest, body)
    return request


def parse_events(body: Any) -> EventsRequest:
    request: EventsRequest = validate_body(EventsRequest, body)
    return request


def parse_stats(body: Any) -> StatsRequest:
    request: StatsRequest = validate_body(StatsRequest, body)
    return request
