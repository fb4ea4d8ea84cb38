"""Audit straight from the log: a flow's history, and paging through the log by position."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from events.contract.audit import EventsRequest, HistoryRequest
from events.contract.errors import MalformedEvent
from events.contract.subjects import Subjects
from events.log import EventLog, StoredMessage
from events.model import decode_event

__all__ = ["AuditReader", "recorded_json"]

log = logging.getLogger(__name__)


class AuditReader:
    def __init__(self, event_log: EventLog, subjects: Subjects) -> None:
        self._log = event_log
        self._subjects = subjects

    async def history(self, request: HistoryRequest) -> list[dict[str, Any]]:
        pages = self._log.pages(0, subject_filter=self._subjects.event(request.id))
        return [recorded_json(message) async for page in pages for message in page]

    async def events(self, request: EventsRequest) -> list[dict[str, Any]]:
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
