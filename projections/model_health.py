"""What the read model says about its own health: how far it has applied the log, and which log
messages it parked instead of applying (malformed events, unknown event types)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.store import read_checkpoint
from projections.tables import parked_event

__all__ = ["ParkedEvent", "ProjectionHealth", "read_projection_health"]


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    position: int
    subject: str
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"position": self.position, "subject": self.subject, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ProjectionHealth:
    # The last log position applied (the checkpoint, committed with the rows it produced).
    position: int
    parked_count: int
    # The first parked messages in log order, at most the limit asked for.
    parked: list[ParkedEvent]


async def read_projection_health(conn: AsyncConnection, parked_limit: int) -> ProjectionHealth:
    position = await read_checkpoint(conn)
    count = (await conn.execute(select(func.count()).select_from(parked_event))).scalar_one()
    rows = await conn.execute(
        select(parked_event.c.position, parked_event.c.subject, parked_event.c.reason)
        .order_by(parked_event.c.position)
        .limit(parked_limit)
    )
    parked = [ParkedEvent(int(row.position), row.subject, row.reason) for row in rows]
    return ProjectionHealth(position, int(count), parked)
