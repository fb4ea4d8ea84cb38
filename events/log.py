"""What the write side and the audit need from the event log, independent of JetStream.

`JetStreamLog` (events/jetstream_log.py) is the real implementation; `InMemoryLog`
(events/memory_log.py) gives unit tests the same semantics without a socket.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "MAX_APPEND_MESSAGES",
    "AppendMessage",
    "EventLog",
    "StoredMessage",
    "WrongExpectedPosition",
]

# The most messages one atomic append holds (JetStream's atomic batch limit).
MAX_APPEND_MESSAGES = 1000


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an atomic append.

    `expect_last` guards the append: the subject's latest message must be at this position
    (0: the subject must be empty); None appends unconditionally. A guard on a subject that an
    earlier message of the same append writes always fails (JetStream refuses it).
    """

    subject: str
    data: bytes
    expect_last: int | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the log stores it: `time` is when it was stored (None only for messages
    made outside a log, e.g. a test's recorded corpus)."""

    subject: str
    data: bytes
    position: int
    time: datetime | None = None


class WrongExpectedPosition(Exception):
    """An append's `expect_last` did not hold: someone else wrote first. Nothing was appended."""


class EventLog(Protocol):
    async def append(self, messages: Sequence[AppendMessage]) -> int:
        """Append all messages (1 to MAX_APPEND_MESSAGES) or none, atomically; return the
        position of the last one.

        Raises WrongExpectedPosition when a guard fails, LogUnavailable when the log cannot
        be reached.
        """
        ...

    async def last(self, subject: str) -> StoredMessage | None:
        """The latest message on a subject."""
        ...

    async def first(self, subject: str) -> StoredMessage | None:
        """The earliest message on a subject."""
        ...

    async def read(
        self, after: int, limit: int, subject_filter: str | None = None
    ) -> list[StoredMessage]:
        """Up to `limit` messages with position > after (matching the filter), in log order:
        a look-up. To go through the log, use `pages`."""
        ...

    def pages(
        self,
        after: int,
        until: int | None = None,
        max_batch: int = 1000,
        subject_filter: str | None = None,
    ) -> AsyncGenerator[list[StoredMessage], None]:
        """The messages with after < position <= until (matching the filter), in log order, as
        non-empty pages of at most `max_batch`; without `until`, to the log's end as it was
        when the last page was read. The next page is read while the caller holds this one
        (events/paging.py). A caller that stops early closes it (`contextlib.aclosing`)."""
        ...

    def follow(self, after: int, max_batch: int = 500) -> AsyncGenerator[list[StoredMessage], None]:
        """Every message after a position, then each new one as it arrives, in batches."""
        ...

    async def last_position(self) -> int:
        """The position of the log's latest message (0 when empty)."""
        ...
