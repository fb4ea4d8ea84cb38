"""Replies on the wire: the body bytes and the contract's headers (CONTRACT.md "Reply headers").

The service builds them (`json_reply`, `error_reply`) and writes `headers()`; the client reads
the same headers back with `status_and_position`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from events import jsoncodec
from events.contract.errors import FlowsError
from events.contract.headers import POSITION, SERVICE_ERROR, SERVICE_ERROR_CODE, STATUS

__all__ = ["Reply", "error_reply", "json_reply", "status_and_position"]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    # Log position after which a command's effect is visible (command replies only).
    position: int | None = None
    # One-line description, for error replies only.
    error: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {STATUS: str(self.status)}
        if self.position is not None:
            headers[POSITION] = str(self.position)
        if self.error is not None:
            headers[SERVICE_ERROR_CODE] = str(self.status)
            # Header values are one line of printable text.
            headers[SERVICE_ERROR] = " ".join(self.error.split())[:500]
        return headers


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


def status_and_position(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    """A reply's status and position as its headers give them; None where absent or not a
    number (a status-less reply did not come from a flows service)."""
    raw_status, raw_position = headers.get(STATUS), headers.get(POSITION)
    status = int(raw_status) if raw_status and raw_status.strip().isdigit() else None
    position = int(raw_position) if raw_position and raw_position.strip().isdigit() else None
    return status, position
