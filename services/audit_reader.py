"""Audit straight from the log: a flow's history, and paging through the log by position."""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from events.contract.bodies import validate_body
from events.contract.commands import FlowId
from events.contract.errors import MalformedEvent
from events.contract.subjects import Subjects
from events.log import EventLog, StoredMessage
from events.model import EventType, decode_event

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
        pages = self._log.pages(0, subject_filter=self._subjects.event(request.id))
        return [recorded_json(message) async for page in pages for message in page]

    async def events(self, body: Any) -> list[dict[str, Any]]:
        request: EventsRequest = validate_body(EventsRequest, body)
        subject = (
            self._subjects.event(request.flow_id) if request.flow_id else self._subjects.all_events
        )
        wanted = set(request.types) if request.types is not None else None
        found: list[dict[str, Any]] = []
        pages = self._log.pages(request.after, max_batch=request.limit, subject_filter=subject)
        async with contextlib.aclosing(pages):
            async for page in pages:
                for message in page:
                    recorded = recorded_json(message)
                    if wanted is None or recorded.get("type") in wanted:
                        found.append(recorded)
                        if len(found) == request.limit:
                            return found
        return found


def recorded_json(message: StoredMessage) -> dict[str, Any]:
    """A log message as audit shows it: the RecordedEvent, or, for a message that is not a
    valid event, its position, subject and what is wrong (reported, never hidden)."""
    try:
        return decode_event(message.data, message.position).as_json()
    except MalformedEvent as exc:
        log.warning("audit read a malformed event: %s", exc)
        return {"position": message.position, "subject": message.subject, "malformed": exc.reason}
