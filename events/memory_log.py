"""An in-memory `EventLog` with the JetStream log's semantics, for fast unit tests.

Atomic appends, per-subject guards checked against the state before the append, gapless
positions, first/last by subject, reads and pages after a position, and a live follower.
tests/integration/test_event_log_contract.py holds it and the JetStream log to the same tests.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime

from events.log import MAX_APPEND_MESSAGES, AppendMessage, StoredMessage, WrongExpectedPosition
from events.paging import read_ahead

__all__ = ["InMemoryLog"]


def _matches(subject: str, pattern: str | None) -> bool:
    if pattern is None:
        return True
    # NATS wildcards: `*` one token, `>` the rest.
    tokens, wanted = subject.split("."), pattern.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(tokens) == len(wanted)


class InMemoryLog:
    def __init__(self) -> None:
        self.messages: list[StoredMessage] = []
        self._last_by_subject: dict[str, int] = {}
        self._first_by_subject: dict[str, int] = {}
        self._appended = asyncio.Condition()

    async def append(self, messages: Sequence[AppendMessage]) -> int:
        if not messages:
            raise ValueError("append needs at least one message")
        if len(messages) > MAX_APPEND_MESSAGES:
            raise ValueError(f"an atomic append holds at most {MAX_APPEND_MESSAGES} messages")
        written: set[str] = set()
        for message in messages:
            if message.expect_last is not None:
                current = self._last_by_subject.get(message.subject, 0)
                # As JetStream: a guard on a subject this append already writes never holds.
                if message.subject in written or current != message.expect_last:
                    raise WrongExpectedPosition(f"wrong last sequence: {current}")
            written.add(message.subject)
        stored = datetime.now(UTC)
        for message in messages:
            position = len(self.messages) + 1
            self.messages.append(StoredMessage(message.subject, message.data, position, stored))
            self._last_by_subject[message.subject] = position
            self._first_by_subject.setdefault(message.subject, position)
        async with self._appended:
            self._appended.notify_all()
        return len(self.messages)

    async def last(self, subject: str) -> StoredMessage | None:
        position = self._last_by_subject.get(subject)
        return self.messages[position - 1] if position else None

    async def first(self, subject: str) -> StoredMessage | None:
        position = self._first_by_subject.get(subject)
        return self.messages[position - 1] if position else None

    async def read(
        self, after: int, limit: int, subject_filter: str | None = None
    ) -> list[StoredMessage]:
        found = [m for m in self.messages[after:] if _matches(m.subject, subject_filter)]
        return found[:limit]

    def pages(
        self,
        after: int,
        until: int | None = None,
        max_batch: int = 1000,
        subject_filter: str | None = None,
    ) -> AsyncGenerator[list[StoredMessage], None]:
        read_page = functools.partial(self.read, subject_filter=subject_filter)
        return read_ahead(read_page, after, until, max_batch)

    async def follow(
        self, after: int, max_batch: int = 500
    ) -> AsyncGenerator[list[StoredMessage], None]:
        position = after
        while True:
            seen = position
            async with self._appended:
                await self._appended.wait_for(lambda seen=seen: len(self.messages) > seen)  # type: ignore[misc]
            batch = self.messages[position : position + max_batch]
            position = batch[-1].position
            yield batch

    async def last_position(self) -> int:
        return len(self.messages)
