"""`flows verify`'s walk over the log: every sequence present, each flow's events in a sensible
order, every event linked to the one before it (events/chain.py), every message a valid event.

The walk is one pass in log order, page by page, keeping per flow only the last message's hash,
position and type, so it runs over any log length in bounded memory (plus one entry per event
id, to catch re-published copies).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from events.chain import digest
from events.contract.errors import MalformedEvent
from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.model import RecordedEvent, decode_event
from events.records import MalformedRecord, NameMarker, StoredReply
from projections.verify.report import Finding

__all__ = ["LogAudit"]

_TAMPERED = (
    "the log was written around the service (events are never changed, re-sent or removed by "
    "it): find who can publish to or delete from stream {stream} (restrict it with NATS "
    "permissions), compare with a backup or mirror of the stream, and restore from a trusted "
    "copy; then run `flows rebuild` and `flows verify` again"
)


@dataclass(slots=True)
class _Trail:
    """What the walk remembers of one flow: its latest message, and where its chain starts."""

    digest: str
    position: int
    event_type: str | None  # None: the latest message was not a valid event
    created_at: int | None  # position of its FlowCreated
    chained_from: int | None  # position of its first event with a chain link (schema >= 2)
    unchained: int  # events written before the chain existed (schema 1)


class LogAudit:
    def __init__(self, subjects: Subjects, stream: str) -> None:
        self._subjects = subjects
        self._stream = stream
        self._tampered = _TAMPERED.format(stream=stream)
        self._next_position = 1
        self._gaps: list[tuple[int, int]] = []  # missing positions, as inclusive ranges
        self._trails: dict[str, _Trail] = {}
        self._event_ids: dict[str, int] = {}
        self._schemas: Counter[int] = Counter()
        self.findings: list[Finding] = []
        self.messages = 0
        self.events = 0

    @property
    def flows(self) -> int:
        return len(self._trails)

    def feed(self, messages: Sequence[StoredMessage]) -> None:
        """The next messages of the log, in log order."""
        for message in messages:
            self._sequence(message.position)
            self.messages += 1
            flow_id = self._subjects.flow_id_of(message.subject)
            if flow_id is not None:
                self._event(message, flow_id)
            else:
                self._record(message)

    def finish(self, last_position: int) -> list[str]:
        """Close the walk at the stream's last sequence; return the notes worth reporting."""
        if last_position >= self._next_position:
            self._missing(self._next_position, last_position)
        notes = []
        unchained = [trail.unchained for trail in self._trails.values() if trail.unchained]
        if unchained:
            notes.append(
                f"{sum(unchained)} events of {len(unchained)} flows were written before the "
                "tamper-evidence chain existed (schema 1) and carry no link; each such flow's "
                "chain starts at its first schema-2 event, which links to the last schema-1 one"
            )
        if self._schemas:
            versions = ", ".join(f"{n} of schema {v}" for v, n in sorted(self._schemas.items()))
            notes.append(f"events by schema version: {versions}")
        return notes

    # -- sequences ---------------------------------------------------------------------------
    def _sequence(self, position: int) -> None:
        if position > self._next_position:
            self._missing(self._next_position, position - 1)
        self._next_position = position + 1

    def _missing(self, first: int, last: int) -> None:
        self._gaps.append((first, last))
        which = f"position {first} is" if first == last else f"positions {first}..{last} are"
        self.findings.append(
            Finding(
                kind="missing-sequence",
                position=first,
                problem=(
                    f"{which} missing from stream {self._stream}: deleted or purged by someone "
                    "(the service never removes a message); whatever was there is gone from "
                    "the record (findings on the flows it belonged to follow, where the chain "
                    "can tell)"
                ),
                action=self._tampered,
            )
        )

    def _gaps_between(self, after: int, before: int) -> list[tuple[int, int]]:
        start = bisect.bisect_left(self._gaps, (after + 1, 0))
        return [gap for gap in self._gaps[start:] if gap[1] < before]

    # -- events ------------------------------------------------------------------------------
    def _event(self, message: StoredMessage, flow_id: str) -> None:
        trail = self._trails.get(flow_id)
        try:
            recorded = decode_event(message.data, message.position)
        except MalformedEvent as exc:
            self._malformed(message, flow_id, exc.reason)
            recorded = None
        if recorded is not None:
            self.events += 1
            self._schemas[recorded.schema] += 1
            self._check_identity(recorded, flow_id, message.subject)
            self._check_continuity(recorded, trail)
            self._check_chain(recorded, trail)
        if trail is None:
            trail = self._trails[flow_id] = _Trail("", 0, None, None, None, 0)
        trail.digest = digest(message.data)
        trail.position = message.position
        trail.event_type = recorded.event.type if recorded else None
        if recorded is not None:
            if recorded.event.type == "FlowCreated" and trail.created_at is None:
                trail.created_at = message.position
            if recorded.schema >= 2 and trail.chained_from is None:
                trail.chained_from = message.position
            elif recorded.schema == 1:
                trail.unchained += 1

    def _finding(self, kind: str, recorded: RecordedEvent, problem: str, action: str) -> None:
        self.findings.append(
            Finding(
                kind=kind,
                position=recorded.position,
                flow_id=recorded.event.flow_id,
                event_type=recorded.event.type,
                problem=problem,
                action=action,
            )
        )

    # -- bookkeeping records -------------------------------------------------------------------
    def _record(self, message: StoredMessage) -> None:
        """A name claim or stored reply must be one: anything else there was written around
        the service (for instance a reply a client directed there, before replies were
        checked). The writer skips it, acting on the latest valid record."""
        prefix = self._subjects.prefix
        try:
            if message.subject.startswith(f"{prefix}.names."):
                NameMarker.decode(message.data)
            elif message.subject.startswith(f"{prefix}.replies."):
                StoredReply.decode(message.data, message.position)
        except MalformedRecord as exc:
            self.findings.append(
                Finding(
                    kind="malformed-record",
                    position=message.position,
                    problem=(
                        f"{exc} on {message.subject}; the service skips it and acts on the "
                        "latest valid record there"
                    ),
                    action=(
                        f"find who published it on {message.subject} and stop them (only the "
                        "service's log user may publish there: deploy/nats/nats-server.conf)"
                    ),
                )
            )

    def _malformed(self, message: StoredMessage, flow_id: str, reason: str) -> None:
        self.findings.append(
            Finding(
                kind="malformed",
                position=message.position,
                flow_id=flow_id,
                problem=f"not a valid event ({reason}); the projector parks it and skips it",
                action=(
                    f"find who published it on {message.subject} and stop them; a log message "
                    "is never changed, so if it was meant to change the flow, make that change "
                    "through the service"
                ),
            )
        )

    def _check_identity(self, recorded: RecordedEvent, flow_id: str, subject: str) -> None:
        event = recorded.event
        if event.flow_id != flow_id:
            self._finding(
                "wrong-subject",
                recorded,
                f"the event names flow {event.flow_id} but is stored on {subject}",
                self._tampered,
            )
        earlier = self._event_ids.setdefault(event.id, recorded.position)
        if earlier != recorded.position:
            self._finding(
                "duplicate-event",
                recorded,
                f"event id {event.id} was already recorded at position {earlier}: this is a "
                "second copy, re-published onto the log",
                self._tampered,
            )

    def _check_continuity(self, recorded: RecordedEvent, trail: _Trail | None) -> None:
        event_type = recorded.event.type
        if trail is None:
            if event_type != "FlowCreated":
                self._finding(
                    "continuity",
                    recorded,
                    f"the flow's first message in the log is a {event_type}: its FlowCreated "
                    "is missing",
                    self._tampered,
                )
            return
        if event_type == "FlowCreated":
            where = f"at position {trail.created_at}" if trail.created_at else "earlier"
            problem = f"a second FlowCreated for this flow (it was created {where})"
        elif trail.event_type == "FlowDeleted":
            problem = f"an event after the flow's FlowDeleted at position {trail.position}"
        else:
            return
        self._finding("continuity", recorded, problem, self._tampered)

    def _check_chain(self, recorded: RecordedEvent, trail: _Trail | None) -> None:
        prev = recorded.event.prev
        if recorded.schema < 2:
            if trail is not None and trail.chained_from is not None:
                self._finding(
                    "chain-broken",
                    recorded,
                    "written without a chain link (schema 1) although the flow's chain began "
                    f"at position {trail.chained_from}: an event stripped of its link, or "
                    "written by old code around the service",
                    self._tampered,
                )
            return
        expected = trail.digest if trail is not None else None
        if prev == expected:
            return
        if trail is None:
            gaps = self._gaps_between(0, recorded.position)
            problem = (
                "its chain link names a message before it, but it is the flow's first message "
                "in the log: the flow's earlier messages were removed"
            )
        else:
            gaps = self._gaps_between(trail.position, recorded.position)
            if prev is None:
                problem = (
                    "its chain link is empty (it claims to be the flow's first event) but the "
                    f"flow's message at position {trail.position} precedes it: a re-published "
                    "copy of a first event, or an event written around the service"
                )
            else:
                problem = (
                    "its chain link does not match the flow's previous message (position "
                    f"{trail.position}): that message was altered after it was written, a "
                    "message between them was removed, or this event was re-published"
                )
        if gaps:
            missing = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in gaps)
            problem += f"; missing position(s) {missing} lie between, likely this flow's"
        self._finding("chain-broken", recorded, problem, self._tampered)
