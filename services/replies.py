"""Replies on the wire: the body bytes and the contract's headers (CONTRACT.md "Reply headers")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from events import jsoncodec
from events.errors import FlowsError

__all__ = ["Deferred", "Reply", "error_reply", "json_reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    # Log position after which a command's effect is visible (command replies only).
    position: int | None = None
    # One-line description, for error replies only.
    error: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Flows-Status": str(self.status)}
        if self.position is not None:
            headers["Flows-Position"] = str(self.position)
        if self.error is not None:
            headers["Nats-Service-Error-Code"] = str(self.status)
            # Header values are one line of printable text.
            headers["Nats-Service-Error"] = " ".join(self.error.split())[:500]
        return headers


@dataclass(frozen=True, slots=True)
class Deferred:
    """A reply that must first wait (for the read model to reach a position). The transport
    answers it outside its handler pool, so that waiting requests never hold the slots other
    requests need."""

    answer: Callable[[], Awaitable[Reply]]


def json_reply(status: int, body: Any, position: int | None = None) -> Reply:
    return Reply(status, b"" if body is None else jsoncodec.dumps(body), position)


def error_reply(error: FlowsError, position: int | None = None) -> Reply:
    try:
        body = jsoncodec.dumps(error.body())
    except jsoncodec.EncodeError:
        # The body echoes the request (a 422's input), which JSON cannot always carry back:
        # say what failed rather than leave the requester without a reply.
        body = jsoncodec.dumps({"detail": error.summary()})
    return Reply(error.status, body, position, error.summary())
