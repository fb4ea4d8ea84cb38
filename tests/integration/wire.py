"""Helpers for the integration tests: raw request-reply on the wire, and assertions on replies.

`call` sends exactly the bytes given (or the compact JSON of an object) with raw nats-py, so the
tests see the headers and body the service really sent. The `assert_*` helpers check the
contract's reply headers and Prefect's error shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient

from events import jsoncodec
from events.timefmt import parse_datetime

__all__ = [
    "FLOW_KEYS",
    "TIMESTAMP",
    "UUID_TEXT",
    "Requester",
    "WireReply",
    "assert_error",
    "assert_flow",
    "assert_success",
    "assert_validation_error",
    "call",
    "stream_messages",
    "validation_body",
]

# Prefect's `schemas.core.Flow` key order.
FLOW_KEYS = ["id", "created", "updated", "name", "tags", "labels"]
# UTC, `Z`, six-digit fraction that is omitted entirely at zero.
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ERROR_HEADERS = ("Nats-Service-Error-Code", "Nats-Service-Error")
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class WireReply:
    status: int
    headers: dict[str, str]
    data: bytes

    @property
    def json(self) -> Any:
        # Exact: integers beyond 64 bits stay integers.
        return jsoncodec.loads(self.data) if self.data else None

    @property
    def position(self) -> int | None:
        raw = self.headers.get("Flows-Position")
        return None if raw is None else int(raw)


class _Received(Protocol):
    data: bytes
    headers: dict[str, str] | None


class Requester(Protocol):
    """What sends a request: nats-py's client, or tests/integration/transport.py's in-process
    stand-in."""

    async def request(
        self,
        subject: str,
        payload: bytes = ...,
        timeout: float = ...,
        headers: dict[str, str] | None = ...,
    ) -> _Received: ...


def encode(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    return jsoncodec.dumps(body)


async def call(
    nc: Requester | NatsClient,
    prefix: str,
    operation: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
) -> WireReply:
    """Request `<prefix>.<operation>` with `body` (bytes as is, None as an empty payload)."""
    msg = await nc.request(
        f"{prefix}.{operation}", encode(body), timeout=timeout, headers=headers or None
    )
    received = dict(msg.headers or {})
    assert "Flows-Status" in received, f"no Flows-Status header on {operation}: {received}"
    return WireReply(int(received["Flows-Status"]), received, msg.data)


def assert_success(reply: WireReply, status: int) -> None:
    assert reply.status == status, (reply.status, reply.data)
    for header in ERROR_HEADERS:
        assert header not in reply.headers, f"{header} on a {status} reply: {reply.headers}"


def assert_error(reply: WireReply, status: int) -> None:
    """An error reply: its status, and the NATS services-framework error headers."""
    assert reply.status == status, (reply.status, reply.data)
    assert reply.headers.get("Nats-Service-Error-Code") == str(status), reply.headers
    description = reply.headers.get("Nats-Service-Error", "")
    assert description.strip(), f"empty Nats-Service-Error: {reply.headers}"
    assert "\n" not in description
    assert "\r" not in description


def validation_body(errors: list[dict[str, Any]], request_body: Any) -> dict[str, Any]:
    return {
        "exception_message": "Invalid request received.",
        "exception_detail": errors,
        "request_body": request_body,
    }


def assert_validation_error(
    reply: WireReply, errors: list[dict[str, Any]], request_body: Any
) -> None:
    """A 422 in Prefect's RequestValidationError shape, byte for byte."""
    assert_error(reply, 422)
    expected = jsoncodec.dumps(validation_body(errors, request_body))
    assert reply.data == expected, f"\n got: {reply.data!r}\nwant: {expected!r}"


def assert_flow(
    body: Any, *, name: str, tags: list[str] | None = None, labels: Any = ...
) -> dict[str, Any]:
    """A Flow object in Prefect's shape and key order; returns it."""
    assert isinstance(body, dict), body
    assert list(body) == FLOW_KEYS, list(body)
    assert UUID_TEXT.match(body["id"]), body["id"]
    assert TIMESTAMP.match(body["created"]), body["created"]
    assert TIMESTAMP.match(body["updated"]), body["updated"]
    assert parse_datetime(body["created"]) <= parse_datetime(body["updated"])
    assert body["name"] == name
    assert body["tags"] == ([] if tags is None else tags)
    if labels is not ...:
        assert body["labels"] == labels
    return body


async def stream_messages(nc: NatsClient, stream: str) -> int:
    """How many messages the service's stream holds (events, name markers, stored replies)."""
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.messages)
