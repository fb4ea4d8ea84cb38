"""The write side: load what a command needs from the log, decide, append under guards.

Every append is guarded (optimistic concurrency on the flow's subject, and on the name marker's
subject for creates and deletes), so concurrent commands from any number of service processes
can never interleave wrongly; a command that loses a race reloads and decides again.
A command sent with a command id (`Nats-Msg-Id`) appends its reply in the same atomic batch as its
events, so a retry finds the reply instead of applying the command twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from events.errors import ConcurrencyConflict, FlowNotFound
from events.log import AppendMessage, EventLog, StoredMessage, WrongExpectedPosition
from events.model import EventType, encode_event, flow_document
from events.records import NameMarker, StoredReply
from events.rules import decide_create, decide_delete, decide_update
from events.subjects import Subjects
from events.timefmt import utcnow

__all__ = ["CommandResult", "FlowWriter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command's reply says: status, body, and where its effect is visible."""

    status: int
    body: Any
    position: int
    # A create that found its name held: the reply body is that flow's stored row, which the
    # caller reads from the read model once it has reached `position`.
    existing_flow_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Head:
    """The latest event of a flow, enough to guard an append and to decide."""

    type: EventType | None
    position: int
    data: dict[str, Any]


class FlowWriter:
    def __init__(
        self,
        log: EventLog,
        subjects: Subjects,
        *,
        clock: Callable[[], datetime] = utcnow,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        max_attempts: int = 10,
    ) -> None:
        self._log = log
        self._subjects = subjects
        self._clock = clock
        self._new_id = new_id
        self._max_attempts = max_attempts

    # -- stored replies ----------------------------------------------------------------------
    async def stored_reply(self, command_id: str) -> StoredReply | None:
        message = await self._log.last(self._subjects.reply(command_id))
        return StoredReply.decode(message.data, message.position) if message else None

    async def store_reply(self, reply: StoredReply) -> StoredReply:
        """Keep the reply of a command that appended no event; the first stored reply wins."""
        message = AppendMessage(self._subjects.reply(reply.command_id), reply.encode(), 0)
        try:
            await self._log.append([message])
        except WrongExpectedPosition:
            earlier = await self.stored_reply(reply.command_id)
            if earlier is not None:
                return earlier
            raise
        return reply

    def _with_reply(
        self,
        messages: list[AppendMessage],
        command_id: str | None,
        operation: str,
        status: int,
        body: Any,
    ) -> list[AppendMessage]:
        if command_id is None:
            return messages
        reply = StoredReply(command_id, operation, status, body)
        return [*messages, AppendMessage(self._subjects.reply(command_id), reply.encode(), 0)]

    async def _append(
        self, messages: Sequence[AppendMessage], command_id: str | None
    ) -> int | StoredReply:
        """Append; on a lost race return the stored reply if our command id won it elsewhere."""
        try:
            return await self._log.append(messages)
        except WrongExpectedPosition:
            if command_id is not None:
                earlier = await self.stored_reply(command_id)
                if earlier is not None:
                    return earlier
            raise

    def _conflict(self, what: str) -> ConcurrencyConflict:
        return ConcurrencyConflict(
            f"{what} lost {self._max_attempts} optimistic-concurrency races in a row; "
            "retry the request"
        )

    # -- commands ----------------------------------------------------------------------------
    async def create(
        self,
        name: str,
        tags: list[str],
        labels: dict[str, Any] | None,
        command_id: str | None = None,
    ) -> CommandResult | StoredReply:
        name_subject = self._subjects.name(name)
        for _ in range(self._max_attempts):
            marker_message = await self._log.last(name_subject)
            if marker_message is not None:
                marker = NameMarker.decode(marker_message.data)
                if marker.held:
                    head = await self._log.last(self._subjects.event(marker.flow_id))
                    position = head.position if head else marker_message.position
                    return CommandResult(200, None, position, existing_flow_id=marker.flow_id)
            flow_id, now = self._new_id(), self._clock()
            event = decide_create(
                name=name,
                tags=tags,
                labels=labels,
                flow_id=flow_id,
                event_id=self._new_id(),
                now=now,
                command_id=command_id or self._new_id(),
            )
            body = flow_document(flow_id, now, now, name, list(tags), labels)
            messages = [
                AppendMessage(self._subjects.event(flow_id), encode_event(event), 0),
                AppendMessage(
                    name_subject,
                    NameMarker(name, flow_id, held=True).encode(),
                    marker_message.position if marker_message else 0,
                ),
            ]
            try:
                outcome = await self._append(
                    self._with_reply(messages, command_id, "create", 201, body), command_id
                )
            except WrongExpectedPosition:
                continue  # the name changed hands meanwhile: look again
            if isinstance(outcome, StoredReply):
                return outcome
            return CommandResult(201, body, outcome)
        raise self._conflict(f"create of flow name {name!r}")

    async def update(
        self, flow_id: str, tags: list[str] | None, command_id: str | None = None
    ) -> CommandResult | StoredReply:
        subject = self._subjects.event(flow_id)
        for _ in range(self._max_attempts):
            head = await self._head(flow_id)
            event = decide_update(
                current=head.type,
                flow_id=flow_id,
                tags=tags,
                event_id=self._new_id(),
                now=self._clock(),
                command_id=command_id or self._new_id(),
            )
            messages = [AppendMessage(subject, encode_event(event), head.position)]
            try:
                outcome = await self._append(
                    self._with_reply(messages, command_id, "update", 204, None), command_id
                )
            except WrongExpectedPosition:
                continue
            if isinstance(outcome, StoredReply):
                return outcome
            return CommandResult(204, None, outcome)
        raise self._conflict(f"update of flow {flow_id}")

    async def delete(
        self, flow_id: str, command_id: str | None = None
    ) -> CommandResult | StoredReply:
        for _ in range(self._max_attempts):
            messages = await self._deletion(flow_id, command_id)
            try:
                outcome = await self._append(
                    self._with_reply(messages, command_id, "delete", 204, None), command_id
                )
            except WrongExpectedPosition:
                continue
            if isinstance(outcome, StoredReply):
                return outcome
            return CommandResult(204, None, outcome)
        raise self._conflict(f"delete of flow {flow_id}")

    async def delete_many(
        self, flow_ids: Sequence[str], command_id: str | None = None
    ) -> CommandResult | StoredReply:
        """Delete every listed flow that exists, all in one atomic append."""
        for _ in range(self._max_attempts):
            attempts = await asyncio.gather(
                *(self._deletion_or_none(flow_id, command_id) for flow_id in flow_ids)
            )
            deleted = [fid for fid, msgs in zip(flow_ids, attempts, strict=True) if msgs]
            messages = [message for msgs in attempts if msgs for message in msgs]
            body = {"deleted": deleted}
            if not messages:
                if command_id is None:
                    return CommandResult(200, body, 0)
                return await self.store_reply(StoredReply(command_id, "bulk_delete", 200, body, 0))
            try:
                outcome = await self._append(
                    self._with_reply(messages, command_id, "bulk_delete", 200, body), command_id
                )
            except WrongExpectedPosition:
                continue
            if isinstance(outcome, StoredReply):
                return outcome
            return CommandResult(200, body, outcome)
        raise self._conflict(f"bulk delete of {len(flow_ids)} flows")

    # -- loading -----------------------------------------------------------------------------
    async def _head(self, flow_id: str) -> _Head:
        message = await self._log.last(self._subjects.event(flow_id))
        return _head_of(message)

    async def _deletion_or_none(
        self, flow_id: str, command_id: str | None
    ) -> list[AppendMessage] | None:
        try:
            return await self._deletion(flow_id, command_id)
        except FlowNotFound:
            return None

    async def _deletion(self, flow_id: str, command_id: str | None) -> list[AppendMessage]:
        """The guarded messages that delete one flow and free its name."""
        subject = self._subjects.event(flow_id)
        head = await self._head(flow_id)
        if head.type is None or head.type == "FlowDeleted":
            raise FlowNotFound()
        if head.type == "FlowCreated":
            name = str(head.data["name"])
        else:
            first = _head_of(await self._log.first(subject))
            name = str(first.data["name"])
        name_subject = self._subjects.name(name)
        marker = await self._log.last(name_subject)
        event = decide_delete(
            current=head.type,
            flow_id=flow_id,
            name=name,
            event_id=self._new_id(),
            now=self._clock(),
            command_id=command_id or self._new_id(),
        )
        return [
            AppendMessage(subject, encode_event(event), head.position),
            AppendMessage(
                name_subject,
                NameMarker(name, flow_id, held=False).encode(),
                marker.position if marker else 0,
            ),
        ]


def _head_of(message: StoredMessage | None) -> _Head:
    if message is None:
        return _Head(type=None, position=0, data={})
    raw = orjson.loads(message.data)
    # Only the type and data are needed; a full decode happens in the projector.
    return _Head(type=raw.get("type"), position=message.position, data=raw.get("data") or {})
