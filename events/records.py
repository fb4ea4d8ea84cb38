"""The two kinds of bookkeeping message the log holds beside events.

Name markers make name uniqueness a property of the log: an event that creates or deletes a flow
is appended in one atomic batch with the marker of its name, guarded by the marker's position, so
two live flows can never share a name and no crash can leave a name claimed by nothing.

Stored replies make retried commands exact: the reply is appended in the same atomic batch as the
command's events, guarded to be the first for its command id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events import jsoncodec

__all__ = ["MalformedRecord", "NameMarker", "StoredReply"]


class MalformedRecord(ValueError):
    """A message on a bookkeeping subject that is not a valid record: put there around the
    service (it never writes one). Readers act on the latest valid record instead, and
    `flows verify` reports it."""


def _fields(payload: bytes, kind: str) -> dict[str, Any]:
    try:
        raw = jsoncodec.loads(payload)
    except ValueError as exc:  # UnicodeDecodeError too: a ValueError
        raise MalformedRecord(f"not a {kind}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise MalformedRecord(f"not a {kind}: a JSON {type(raw).__name__}, not an object")
    return raw


@dataclass(frozen=True, slots=True)
class NameMarker:
    name: str
    flow_id: str
    # True: the flow holds the name. False: the flow was deleted and the name is free.
    held: bool

    def encode(self) -> bytes:
        return jsoncodec.dumps({"name": self.name, "flow_id": self.flow_id, "held": self.held})

    @classmethod
    def decode(cls, payload: bytes) -> NameMarker:
        raw = _fields(payload, "name claim")
        name, flow_id, held = raw.get("name"), raw.get("flow_id"), raw.get("held")
        if not (isinstance(name, str) and isinstance(flow_id, str) and isinstance(held, bool)):
            raise MalformedRecord("not a name claim: needs string name and flow_id, bool held")
        return cls(name=name, flow_id=flow_id, held=held)


@dataclass(frozen=True, slots=True)
class StoredReply:
    """The reply a command got, kept so that a retry with the same command id gets it again."""

    command_id: str
    operation: str
    status: int
    body: Any
    # Where the command's effect became visible. None: at the stored reply's own position
    # (it is the last message of the command's atomic batch).
    position: int | None = None

    def encode(self) -> bytes:
        return jsoncodec.dumps(
            {
                "command_id": self.command_id,
                "operation": self.operation,
                "status": self.status,
                "body": self.body,
                "position": self.position,
            }
        )

    @classmethod
    def decode(cls, payload: bytes, own_position: int) -> StoredReply:
        raw = _fields(payload, "stored reply")
        command_id, operation = raw.get("command_id"), raw.get("operation")
        status, position = raw.get("status"), raw.get("position")
        if not (
            isinstance(command_id, str)
            and isinstance(operation, str)
            and type(status) is int
            and (position is None or type(position) is int)
        ):
            raise MalformedRecord(
                "not a stored reply: needs string command_id and operation, integer status"
            )
        return cls(
            command_id=command_id,
            operation=operation,
            status=status,
            body=raw.get("body"),
            position=own_position if position is None else position,
        )
