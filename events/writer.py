"""The write side: load what a command needs from the log, decide, append under guards.

Every append is guarded (optimistic concurrency on the flow's subject, and on the name marker's
subject for creates and deletes), so concurrent commands from any number of service processes
can never interleave wrongly; a command that loses a race reloads and decides again.
A command sent with a command id (`Nats-Msg-Id`) appends its reply in the same atomic batch as its
events, so a retry finds the reply instead of applying the command twice.
Each event is chained to the message its flow's subject held last (events/chain.py); the append's
guard on that message's position is what makes the link exact.

What a command costs (tests/unit/test_writer.py TestRoundTrips counts it): a create or an update,
with or without a command id, is one read of the stream leader (the name's claim, or the flow's
head) and one append, whose guard needs the position that read found: the minimum. The stored
reply rides in the append's atomic batch and is only read when a guard fails (a retry). Under
load the append is shared with concurrent commands (events/group_commit.py). On nats-server an
append of several messages (a create; anything with a command id) is an atomic batch; with
`sync_interval: always` on a one-replica file stream, `strace -f -c` counts 4 fsyncs and 2 O_SYNC
writes per batch (the batch is staged in a store of its own), whatever its size; an update
without a command id is one plain publish, one fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.chain import link
from events.contract.commands import Command, CreateFlow, DeleteFlow, DeleteFlows, UpdateFlow
from events.contract.errors import ConcurrencyConflict, FlowNotFound, MalformedEvent
from events.contract.subjects import Subjects
from events.keyed_locks import KeyedLocks
from events.log import AppendMessage, EventLog, StoredMessage, WrongExpectedPosition
from events.model import EventType, decode_event, encode_event, flow_document
from events.records import MalformedRecord, NameMarker, StoredReply
from events.rules import FlowState, decide_create, decide_delete, decide_update, evolve
from events.timefmt import utcnow

__all__ = ["CommandResult", "FlowWriter"]

log = logging.getLogger(__name__)

# A flow's events read back to answer a create with its stored row; far above any real flow's.
_MAX_FLOW_EVENTS = 1_000_000
# The messages of one bookkeeping subject read back past garbage (a name's claims over time).
_MAX_RECORDS = 1_000_000


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command's reply says: status, body, and where its effect is visible. A retried
    command (same command id) gets the result its first run stored, exactly."""

    status: int
    body: Any
    position: int

    @classmethod
    def stored(cls, reply: StoredReply) -> CommandResult:
        return cls(reply.status, reply.body, reply.position or 0)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a command will append, and the reply it gets once appended."""

    messages: list[AppendMessage]
    operation: str
    status: int
    body: Any


@dataclass(frozen=True, slots=True)
class _Head:
    """The latest event of a flow, enough to guard an append, chain the next event, decide."""

    type: EventType | None
    position: int
    data: dict[str, Any]
    # The latest message's exact bytes (None: the subject is empty), hashed into the next
    # event's chain link.
    payload: bytes | None


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
        # Commands on one flow (or one name) in this process go one at a time, so retries only
        # ever arbitrate between service instances, not between our own requests.
        self._locks = KeyedLocks()
        # Appends that lost an optimistic-concurrency race (and were planned again): metrics.
        self.conflicts = 0

    async def execute(self, command: Command, command_id: str | None = None) -> CommandResult:
        """Run one command: the reply it got before if its command id (`Nats-Msg-Id`) ran
        already, else decide against the log and append under guards. Refusals raise
        FlowsError (FlowNotFound, ConcurrencyConflict, LogUnavailable) and change nothing."""
        # No look-up of a stored reply first: every append of a command with an id carries its
        # reply guarded on an empty reply subject, so a command that ran already fails that
        # guard, changes nothing, and only then is its stored reply read (_run). A retry costs
        # one more round trip; every first run saves one.
        match command:
            case CreateFlow():
                return await self._create(command, command_id)
            case UpdateFlow():
                return await self._update(command, command_id)
            case DeleteFlow():
                return await self._delete(command.id, command_id)
            case DeleteFlows():
                return await self._delete_many(command.flow_ids, command_id)

    # -- stored replies ----------------------------------------------------------------------
    async def stored_reply(self, command_id: str) -> StoredReply | None:
        subject = self._subjects.reply(command_id)
        message = await self._log.last(subject)
        if message is None:
            return None
        try:
            return StoredReply.decode(message.data, message.position)
        except MalformedRecord:
            pass
        # Not a stored reply (written around the service; `flows verify` reports it): the
        # first valid one on the subject is the command's reply, as the first always wins.
        for earlier in await self._log.read(0, _MAX_RECORDS, subject):
            with contextlib.suppress(MalformedRecord):
                return StoredReply.decode(earlier.data, earlier.position)
        return None

    async def _store_reply(self, reply: StoredReply) -> CommandResult:
        """Keep the reply of a command that appended no event; the first stored reply wins."""
        message = AppendMessage(self._subjects.reply(reply.command_id), reply.encode(), 0)
        try:
            await self._log.append([message])
        except WrongExpectedPosition:
            earlier = await self.stored_reply(reply.command_id)
            if earlier is not None:
                return CommandResult.stored(earlier)
            raise
        return CommandResult.stored(reply)

    def _conflict(self, what: str) -> ConcurrencyConflict:
        return ConcurrencyConflict(
            f"{what} lost {self._max_attempts} optimistic-concurrency races in a row; "
            "retry the request"
        )

    async def _run(
        self,
        what: str,
        command_id: str | None,
        plan: Callable[[], Awaitable[_Plan | CommandResult | None]],
    ) -> CommandResult:
        """Plan against the log as it is, append under the plan's guards, and on a lost race
        plan again. A plan may also answer at once (nothing to append)."""
        for attempt in range(self._max_attempts):
            if attempt:  # lost a race with another instance: let the winner finish
                await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.1)))
            try:
                planned = await plan()
            except FlowNotFound:
                # A duplicate of this command may have run while we waited: it is the reply.
                earlier = await self.stored_reply(command_id) if command_id else None
                if earlier is not None:
                    return CommandResult.stored(earlier)
                raise
            if planned is None:
                continue
            if not isinstance(planned, _Plan):
                return planned
            messages = planned.messages
            if command_id is not None:
                reply = StoredReply(command_id, planned.operation, planned.status, planned.body)
                messages = [
                    *messages,
                    AppendMessage(self._subjects.reply(command_id), reply.encode(), 0),
                ]
            try:
                position = await self._log.append(messages)
            except WrongExpectedPosition:
                if command_id is not None:
                    earlier = await self.stored_reply(command_id)
                    if earlier is not None:  # this command already ran (a retry)
                        return CommandResult.stored(earlier)
                self.conflicts += 1
                continue  # someone else wrote first: look again
            return CommandResult(planned.status, planned.body, position)
        raise self._conflict(what)

    # -- commands ----------------------------------------------------------------------------
    async def _create(self, command: CreateFlow, command_id: str | None) -> CommandResult:
        name, tags, labels = command.name, list(command.tags), command.labels
        name_subject = self._subjects.name(name)

        async def plan() -> _Plan | CommandResult | None:
            marker_message = await self._log.last(name_subject)
            marker = await self._latest_claim(marker_message)
            if marker is not None and marker.held:
                return await self._existing(marker.flow_id, command_id)
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
            marker_guard = marker_message.position if marker_message else 0
            messages = [
                # A new flow's subject is empty (guard 0): its first event links to nothing.
                AppendMessage(self._subjects.event(flow_id), encode_event(link(event, None)), 0),
                AppendMessage(name_subject, NameMarker(name, flow_id, True).encode(), marker_guard),
            ]
            body = flow_document(flow_id, now, now, name, list(tags), labels)
            return _Plan(messages, "create", 201, body)

        async with self._locks.hold(name_subject):
            return await self._run(f"create of flow name {name!r}", command_id, plan)

    async def _latest_claim(self, last: StoredMessage | None) -> NameMarker | None:
        """The latest valid claim on a name's subject, whose latest message is `last`.

        A message there that is not a claim (written around the service; `flows verify`
        reports it) must not make the name unusable: the name is as the latest valid claim
        left it, and the next claim guards on the message really there."""
        if last is None:
            return None
        try:
            return NameMarker.decode(last.data)
        except MalformedRecord:
            pass
        for earlier in reversed(await self._log.read(0, _MAX_RECORDS, last.subject)):
            with contextlib.suppress(MalformedRecord):
                return NameMarker.decode(earlier.data)
        return None

    async def _existing(self, flow_id: str, command_id: str | None) -> CommandResult | None:
        """The 200 of a create whose name is held: the holder as its events make it, at its
        latest event's position. None if it was deleted meanwhile (the name is free again)."""
        if command_id is not None:
            # A retry of the create that made this flow finds its first reply here, from the
            # leader, before the flow's events are read from whichever replica answers.
            earlier = await self.stored_reply(command_id)
            if earlier is not None:
                return CommandResult.stored(earlier)
        state: FlowState | None = None
        for message in await self._log.read(0, _MAX_FLOW_EVENTS, self._subjects.event(flow_id)):
            with contextlib.suppress(MalformedEvent):  # parked by the projector too
                state = evolve(state, decode_event(message.data, message.position))
        if state is None or state.deleted:
            return None
        body = state.document()
        if command_id is None:
            return CommandResult(200, body, state.version)
        return await self._store_reply(StoredReply(command_id, "create", 200, body, state.version))

    async def _update(self, command: UpdateFlow, command_id: str | None) -> CommandResult:
        flow_id = command.id
        # None: the body left tags out (leave them alone), not "no tags".
        tags = None if command.tags is None else list(command.tags)

        async def plan() -> _Plan:
            head = await self._head(flow_id)
            event = decide_update(
                current=head.type,
                flow_id=flow_id,
                tags=tags,
                event_id=self._new_id(),
                now=self._clock(),
                command_id=command_id or self._new_id(),
            )
            subject = self._subjects.event(flow_id)
            chained = encode_event(link(event, head.payload))
            messages = [AppendMessage(subject, chained, head.position)]
            return _Plan(messages, "update", 204, None)

        async with self._locks.hold(flow_id):
            return await self._run(f"update of flow {flow_id}", command_id, plan)

    async def _delete(self, flow_id: str, command_id: str | None) -> CommandResult:
        async def plan() -> _Plan:
            return _Plan(await self._deletion(flow_id, command_id), "delete", 204, None)

        async with self._locks.hold(flow_id):
            return await self._run(f"delete of flow {flow_id}", command_id, plan)

    async def _delete_many(self, flow_ids: Sequence[str], command_id: str | None) -> CommandResult:
        """Delete every listed flow that exists, all in one atomic append."""

        async def plan() -> _Plan | CommandResult:
            deletions = await asyncio.gather(
                *(self._deletion_or_none(flow_id, command_id) for flow_id in flow_ids)
            )
            deleted = [fid for fid, msgs in zip(flow_ids, deletions, strict=True) if msgs]
            messages = [message for msgs in deletions if msgs for message in msgs]
            body = {"deleted": deleted}
            if messages:
                return _Plan(messages, "bulk_delete", 200, body)
            if command_id is None:
                return CommandResult(200, body, 0)
            return await self._store_reply(StoredReply(command_id, "bulk_delete", 200, body, 0))

        return await self._run(f"bulk delete of {len(flow_ids)} flows", command_id, plan)

    # -- loading -----------------------------------------------------------------------------
    async def _head(self, flow_id: str) -> _Head:
        subject = self._subjects.event(flow_id)
        message = await self._log.last(subject)
        try:
            return _head_of(message)
        except MalformedEvent:
            pass
        # A message that is not an event (parked by the projector, reported by `flows verify`)
        # is the subject's latest: the flow is as its latest valid event left it, and the next
        # event guards on, and links to, the message that is really there.
        assert message is not None
        state = None
        for earlier in reversed(await self._log.read(0, _MAX_FLOW_EVENTS, subject)):
            with contextlib.suppress(MalformedEvent):
                state = _head_of(earlier)
                break
        if state is None:
            return _Head(type=None, position=message.position, data={}, payload=message.data)
        return dataclasses.replace(state, position=message.position, payload=message.data)

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
            AppendMessage(subject, encode_event(link(event, head.payload)), head.position),
            AppendMessage(
                name_subject,
                NameMarker(name, flow_id, held=False).encode(),
                marker.position if marker else 0,
            ),
        ]


def _head_of(message: StoredMessage | None) -> _Head:
    if message is None:
        return _Head(type=None, position=0, data={}, payload=None)
    recorded = decode_event(message.data, message.position)
    return _Head(
        type=recorded.event.type,
        position=message.position,
        data=recorded.event.data,
        payload=message.data,
    )
