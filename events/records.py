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

__all__ = ["NameMarker", "StoredReply"]


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
        raw = jsoncodec.loads(payload)
        return cls(name=str(raw["name"]), flow_id=str(raw["flow_id"]), held=bool(raw["held"]))


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
        raw = jsoncodec.loads(payload)
        position = raw.get("position")
        return cls(
            command_id=str(raw["command_id"]),
            operation=str(raw["operation"]),
            status=int(raw["status"]),
            body=raw.get("body"),
            position=own_position if position is None else int(position),
        )
