"""Subscriptions whose messages reach a plain function as the bytes NATS sent.

nats-py hands every message through a `Msg` object, a parsed header dict, its subscription's
queue and the task that drains it, then awaits the callback: about 15 µs a message, a third of
the projector's CPU while it reads the log page by page (py-spy). A raw subscription skips all
of it: the connection's reader calls the handler with the subject, reply, payload and header
block, and the handler reads the two or three headers it needs straight from the block.

`RawSubscriptions` is mixed into the service's client (services/nats_headers.py). A reader
given a plain nats-py client (tests, tools) uses its ordinary subscriptions: `supports_raw`
says which. It overrides two private methods of nats-py's client; were nats-py to rename
them, raw subscriptions would receive nothing, and tests/unit/test_raw_delivery.py says so
first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

from nats.aio.client import Client
from nats.aio.subscription import Subscription

__all__ = ["RawHandler", "RawSubscriptions", "header_value", "status_of", "supports_raw"]

# (subject, reply, payload, header block); the block is empty for a message without headers.
RawHandler = Callable[[bytes, bytes, bytes, bytes], None]


class RawSubscriptions(Client):
    """nats-py's client, with subscriptions that hand messages to a function as bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw_handlers: dict[int, RawHandler] = {}

    async def subscribe_raw(self, subject: str, handler: RawHandler) -> Subscription:
        """Subscribe `handler`, which runs in the connection's reader: it must be quick, must
        not raise, and must not wait (keep what arrived; wake whoever waits for it). The
        subscription is nats-py's own, so it is renewed on reconnect and ended by
        `unsubscribe` as usual."""
        subscription = await self.subscribe(subject)
        # No message can have arrived for it yet: the reader runs only when this task yields,
        # and nothing publishes to a fresh inbox before its owner asks.
        self._raw_handlers[subscription._id] = handler
        return subscription

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self._raw_handlers.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        handler(subject, reply, data, headers or b"")

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        super()._remove_sub(sid, max_msgs)
        if sid not in self._subs:
            self._raw_handlers.pop(sid, None)


def supports_raw(nc: Client) -> TypeGuard[RawSubscriptions]:
    return isinstance(nc, RawSubscriptions)


def status_of(headers: bytes) -> tuple[bytes, bytes]:
    """The status code and description of a header block's first line (`NATS/1.0 204 EOB`),
    empty for an ordinary message (`NATS/1.0`)."""
    first = headers[: headers.find(b"\r\n")] if headers else b""
    code, _, description = first[9:].strip().partition(b" ")
    return code, description.strip()


def header_value(headers: bytes, marker: bytes) -> bytes | None:
    """The value of a header, given as `marker` = CRLF + its name + colon (`b"\\r\\nName:"`):
    the last such line, as nats-py's dict keeps the last, stripped of spaces."""
    at = headers.rfind(marker)
    if at < 0:
        return None
    start = at + len(marker)
    return headers[start : headers.find(b"\r\n", start)].strip()
