"""Messages JetStream delivers to a subscription, gathered by its callback.

A callback rather than nats-py's `next_msg`: `next_msg` starts a task, a `wait_for` and a uuid
for every message, which cost more than the rest of reading it (a page of 1000 messages was read
at ~17k messages/s that way, ~31k/s by callback). Two shapes:

- `BatchReply`: the answer to one batched direct get, which ends with a status message;
- `Arrivals`: an endless delivery (the ordered consumer that follows the log live), taken in
  batches, holding at most `limit` messages: one more means the follower has fallen behind
  and goes back to reading pages (see JetStreamLog.follow).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NotJSMessageError

from events.log import StoredMessage
from events.raw_delivery import header_value, status_of
from events.timefmt import parse_datetime

__all__ = ["Arrivals", "BatchReply", "delivered", "nanosecond_time", "stored"]

# How often a follower with nothing to take checks whether its connection was closed: a closed
# connection stops the callback without telling it.
_CLOSED_CHECK_S = 1.0

# Tokens of a JetStream ack subject without a domain (what nats-server sends a consumer), and
# the least with one.
_ACK_TOKENS = 9
_ACK_TOKENS_WITH_DOMAIN = 11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The headers a direct get's answer carries its message's place in (events/raw_delivery.py).
_SUBJECT = b"\r\nNats-Subject:"
_SEQUENCE = b"\r\nNats-Sequence:"
_TIME_STAMP = b"\r\nNats-Time-Stamp:"


class BatchReply:
    """The messages of one batched direct get, gathered by its inbox subscription's callback."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.messages: list[StoredMessage] = []
        self.started: asyncio.Future[None] = loop.create_future()
        # (status, description) of the message that ends the batch.
        self.ended: asyncio.Future[tuple[str, str]] = loop.create_future()

    async def add(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if not self._ended_by(headers.get("Status"), headers.get("Description", "")):
            self.messages.append(stored(msg))

    def add_raw(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        """`add` for a raw subscription (events/raw_delivery.py): the same messages, read
        straight from the header block."""
        status, description = status_of(headers)
        if self._ended_by(status.decode(), description.decode("utf-8", "replace")):
            return
        position = header_value(headers, _SEQUENCE)
        stamp = header_value(headers, _TIME_STAMP)
        self.messages.append(
            StoredMessage(
                subject=(header_value(headers, _SUBJECT) or b"").decode("utf-8", "replace"),
                data=data,
                position=int(position or 0),
                time=nanosecond_time(stamp.decode() if stamp else None),
            )
        )

    def _ended_by(self, status: str | None, description: str) -> bool:
        """Notes that the batch has started; whether this message, with this status, is the
        one that ends it (ordinary messages have none)."""
        if not self.started.done():
            self.started.set_result(None)
        if not status:
            return False
        if not self.ended.done():
            self.ended.set_result((status, description))
        return True


class Arrivals:
    """What a live subscription delivered and nobody took yet, up to `limit` messages. One
    more is an overflow: the taker has fallen behind, so the rest is refused (the callback
    must never wait: see JetStreamLog.follow) and, once what was held has been taken, `take`
    says so with an empty batch."""

    def __init__(self, nc: NatsClient, limit: int, convert: Callable[[Msg], StoredMessage]) -> None:
        self._nc = nc
        self._limit = limit
        self._convert = convert
        self._messages: collections.deque[StoredMessage] = collections.deque()
        self._overflowed = False
        self._failure: BaseException | None = None
        self._arrived: asyncio.Future[None] | None = None

    async def add(self, msg: Msg) -> None:
        """The subscription's callback. It must not raise: nats-py would hand the error to the
        connection's error callback and go on with the next message, and a message lost there
        would be a gap in what the follower folds. A failure is kept and raised by `take`."""
        if self._overflowed or self._failure is not None:
            return
        if len(self._messages) >= self._limit:
            self._overflowed = True
        else:
            try:
                self._messages.append(self._convert(msg))
            except Exception as exc:  # e.g. a delivery without JetStream's metadata
                self._failure = exc
        _wake(self._arrived)

    async def take(self, most: int) -> list[StoredMessage]:
        """Up to `most` messages, waiting for the first; none once they overflowed and all
        they held was taken. Raises ConnectionClosedError once the connection is closed, and
        whatever failed converting a delivery."""
        loop = asyncio.get_running_loop()
        while not self._messages and self._failure is None and not self._overflowed:
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
        return [self._messages.popleft() for _ in range(min(most, len(self._messages)))]


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def delivered(msg: Msg) -> StoredMessage:
    """A message delivered by a consumer: its position and time are in the ack subject,
    `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>`, or
    with a domain and account hash after `ACK` (and a token after `pending`). Read here rather
    than through nats-py's `Msg.metadata`, which builds three objects for them (~5.7 µs a
    message against ~1.6) and rounds the time through a float; this time is truncated to the
    microsecond, as `stored` truncates a direct get's, so both reads of a message agree (a
    follower reads both)."""
    tokens = (msg.reply or "").split(".")
    if tokens[0] != "$JS" or len(tokens) < _ACK_TOKENS or tokens[1] != "ACK":
        raise NotJSMessageError  # as nats-py's Msg.metadata would
    if len(tokens) == _ACK_TOKENS:
        position, nanoseconds = tokens[5], tokens[7]
    elif len(tokens) >= _ACK_TOKENS_WITH_DOMAIN:
        position, nanoseconds = tokens[7], tokens[9]
    else:
        raise NotJSMessageError
    return StoredMessage(
        subject=msg.subject,
        data=msg.data,
        position=int(position),
        time=_EPOCH + timedelta(microseconds=int(nanoseconds) // 1000),
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
    """JetStream's time of a message (nanosecond precision; datetime keeps microseconds,
    truncated)."""
    if not stamp:
        return None
    if stamp.endswith("Z"):
        # What nats-server writes (RFC 3339, UTC, 0-9 fraction digits), read in C: Python
        # 3.11's fromisoformat takes the `Z` and truncates past six digits, as below does
        # (~0.2 against ~1.5 µs, every message read; tests/unit/test_jetstream_delivery.py).
        try:
            return datetime.fromisoformat(stamp)
        except ValueError:
            pass
    head, _, frac = stamp.rstrip("Z").partition(".")
    return parse_datetime(f"{head}.{(frac + '000000')[:6]}Z" if frac else f"{head}Z")
