"""Audit straight from the log: a flow's history, and paging through the log by position."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from events.commands import FlowId
from events.errors import MalformedEvent
from events.log import EventLog, StoredMessage
from events.model import EventType, decode_event
from events.subjects import Subjects
from events.validation import validate_body

__all__ = ["AuditReader", "EventsRequest", "HistoryRequest", "recorded_json"]

log = logging.getLogger(__name__)


class HistoryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: FlowId


class EventsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    after: Annotated[int, Field(ge=0)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    flow_id: FlowId | None = None
    types: list[EventType] | None = None


class AuditReader:
    def __init__(self, event_log: EventLog, subjects: Subjects) -> None:
        self._log = event_log
        self._subjects = subjects

    async def history(self, body: Any) -> list[dict[str, Any]]:
        request: HistoryRequest = validate_body(HistoryRequest, body)
        messages = await self._log.read(0, 1_000_000_000, self._subjects.event(request.id))
        return [recorded_json(message) for message in messages]

    async def events(self, body: Any) -> list[dict[str, Any]]:
        request: EventsRequest = validate_body(EventsRequest, body)
        subject = (
            self._subjects.event(request.flow_id) if request.flow_id else self._subjects.all_events
        )
        wanted = set(request.types) if request.types is not None else None
        found: list[dict[str, Any]] = []
        cursor = request.after
        while len(found) < request.limit:
            page = await self._log.read(cursor, request.limit, subject)
            for message in page:
                recorded = recorded_json(message)
                if wanted is None or recorded.get("type") in wanted:
                    found.append(recorded)
                    if len(found) == request.limit:
                        break
            if len(page) < request.limit:
                break
            cursor = page[-1].position
        return found


def recorded_json(message: StoredMessage) -> dict[str, Any]:
    """A log message as audit shows it: the RecordedEvent, or, for a message that is not a
    valid event, its position, subject and what is wrong (reported, never hidden)."""
    try:
        return decode_event(message.data, message.position).as_json()
    except MalformedEvent as exc:
        log.warning("audit read a malformed event: %s", exc)
        return {"position": message.position, "subject": message.subject, "malformed": exc.reason}
