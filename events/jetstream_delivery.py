"""Messages JetStream delivers to a subscription, gathered by its callback.

A callback rather than nats-py's `next_msg`: `next_msg` starts a task, a `wait_for` and a uuid
for every message, which cost more than the rest of reading it (a page of 1000 messages was read
at ~17k messages/s that way, ~31k/s by callback). Two shapes:

- `BatchReply`: the answer to one batched direct get, which ends with a status message;
- `Arrivals`: an endless delivery (the ordered consumer that follows the log), taken in batches,
  holding at most `limit` messages: beyond that the callback waits, so nats-py's pending queue
  fills and JetStream's flow control slows the server down, as it did with `next_msg`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError

from events.log import StoredMessage
from events.timefmt import parse_datetime

__all__ = ["Arrivals", "BatchReply", "delivered", "nanosecond_time", "stored"]

# How often a follower with nothing to take checks whether its connection was closed: a closed
# connection stops the callback without telling it.
_CLOSED_CHECK_S = 1.0

# Tokens of a JetStream ack subject without a domain (what nats-server sends a consumer).
_ACK_TOKENS = 9


class BatchReply:
    """The messages of one batched direct get, gathered by its inbox subscription's callback."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.messages: list[StoredMessage] = []
        self.started: asyncio.Future[None] = loop.create_future()
        # (status, description) of the message that ends the batch.
        self.ended: asyncio.Future[tuple[str, str]] = loop.create_future()

    async def add(self, msg: Msg) -> None:
        if not self.started.done():
            self.started.set_result(None)
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status:
            if not self.ended.done():
                description = headers.get("Description", "") if headers else ""
                self.ended.set_result((status, description))
            return
        self.messages.append(stored(msg))


class Arrivals:
    """What an endless subscription delivered and nobody took yet, at most `limit` messages."""

    def __init__(self, nc: NatsClient, limit: int, convert: Callable[[Msg], StoredMessage]) -> None:
        self._nc = nc
        self._limit = limit
        self._convert = convert
        self._messages: collections.deque[StoredMessage] = collections.deque()
        self._failure: BaseException | None = None
        self._arrived: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    async def add(self, msg: Msg) -> None:
        """The subscription's callback. It must not raise: nats-py would hand the error to the
        connection's error callback and go on with the next message, and a message lost there
        would be a gap in what the follower folds. A failure is kept and raised by `take`."""
        while len(self._messages) >= self._limit and self._failure is None:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        try:
            self._messages.append(self._convert(msg))
        except Exception as exc:  # e.g. a delivery without JetStream's metadata
            self._failure = exc
        _wake(self._arrived)

    async def take(self, most: int) -> list[StoredMessage]:
        """Up to `most` messages, waiting for the first; raises ConnectionClosedError once the
        connection is closed, and whatever failed converting a delivery."""
        loop = asyncio.get_running_loop()
        while not self._messages and self._failure is None:
            if self._nc.is_closed:
                raise ConnectionClosedError
            self._arrived = loop.create_future()
            check = loop.call_later(_CLOSED_CHECK_S, _wake, self._arrived)
            try:
                await self._arrived
            finally:
                check.cancel()
        if self._failure is not None:
            raise self._failure
        batch = [self._messages.popleft() for _ in range(min(most, len(self._messages)))]
        _wake(self._room)
        return batch


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def delivered(msg: Msg) -> StoredMessage:
    """A message delivered by a consumer: its position and time are in the ack subject,
    `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>`. Read
    here rather than through nats-py's `Msg.metadata`, which builds three objects for them
    (~5.7 µs a message against ~1.6); the other form (with a domain and account hash) and what
    is not a JetStream delivery at all go to nats-py, which reads or refuses them."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) != _ACK_TOKENS or tokens[0] != "$JS" or tokens[1] != "ACK":
        metadata = msg.metadata
        return StoredMessage(
            subject=msg.subject,
            data=msg.data,
            position=int(metadata.sequence.stream),
            time=metadata.timestamp,
        )
    return StoredMessage(
        subject=msg.subject,
        data=msg.data,
        position=int(tokens[5]),
        # As nats-py computes it, so both forms give the same time.
        time=datetime.fromtimestamp(int(tokens[7]) / 1_000_000_000.0, UTC),
    )


def stored(msg: Msg) -> StoredMessage:
    """A message answered by a direct get: its subject, position and time are in its headers."""
    headers = msg.headers or {}
    return StoredMessage(
        subject=headers.get("Nats-Subject", ""),
        data=msg.data,
        position=int(headers.get("Nats-Sequence", "0")),
        time=nanosecond_time(headers.get("Nats-Time-Stamp")),
    )


def nanosecond_time(stamp: str | None) -> datetime | None:
    """JetStream's time of a message (nanosecond precision; datetime keeps microseconds)."""
    if not stamp:
        return None
    head, _, frac = stamp.rstrip("Z").partition(".")
    return parse_datetime(f"{head}.{(frac + '000000')[:6]}Z" if frac else f"{head}Z")
