"""Seed a SQLite read model for query scaling, with the rows the projector writes.

Going through the request path would take hours for a million flows, and even the projector's
apply code spends most of a seed decoding and checking synthetic events; so the seeder inserts
the rows the projector's `FlowCreated` fold writes (projections/fold.py: the flow row, one tag
row per distinct tag, the kept counts, the checkpoint) directly, in transactions of 10,000.
The flows' names and tags are those of `benchmarks/synthetic.py`.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects.sqlite import insert as upsert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from benchmarks.synthetic import tags_of
from events import jsoncodec
from events.model import flow_document
from events.timefmt import utcnow
from projections.fold_counts import CountDeltas
from projections.projector import move_checkpoint
from projections.store import configure_engine, create_schema
from projections.tables import flow, flow_count, flow_tag, flow_tag_count

__all__ = ["ReadModelSeeder"]

_BATCH = 10_000  # messages per transaction


class ReadModelSeeder:
    """A read model grown in steps: `grow_to(n)` adds flows until it holds `n`."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.flows = 0
        self._position = 0
        self._engine: AsyncEngine | None = None

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"

    async def grow_to(self, flows: int) -> float:
        """Add flows up to `flows`; returns the flows inserted per second."""
        if self._engine is None:
            self._engine = create_async_engine(self.url)
            configure_engine(self._engine)
            await create_schema(self._engine)
        started, epoch = time.perf_counter(), utcnow()
        for first in range(self.flows, flows, _BATCH):
            indexes = range(first, min(first + _BATCH, flows))
            rows = [_flow_row(index, epoch + timedelta(microseconds=index)) for index in indexes]
            tag_rows = [{"flow_id": row["id"], "tag": tag} for row in rows for tag in row["tags"]]
            async with self._engine.begin() as conn:
                await conn.execute(insert(flow), rows)
                await conn.execute(insert(flow_tag), tag_rows)
                await _count(conn, rows)
                self._position += len(rows)
                await move_checkpoint(conn, self._position)
        added = flows - self.flows
        self.flows = flows
        return added / (time.perf_counter() - started)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()


async def _count(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Add the new flows to the kept counts, as the projector does for a batch of creates."""
    counts = CountDeltas()
    for row in rows:
        counts.created(row["tags"])
    total = upsert(flow_count).values(id=1, flows=counts.flows)
    await conn.execute(
        total.on_conflict_do_update(
            index_elements=["id"], set_={"flows": flow_count.c.flows + total.excluded.flows}
        )
    )
    per_tag = upsert(flow_tag_count)
    await conn.execute(
        per_tag.on_conflict_do_update(
            index_elements=["tag"],
            set_={"flows": flow_tag_count.c.flows + per_tag.excluded.flows},
        ),
        [{"tag": tag, "flows": flows} for tag, flows in counts.tags.items()],
    )


def _flow_row(index: int, occurred: datetime) -> dict[str, Any]:
    flow_id, name, tags = str(uuid.UUID(int=index + 1)), f"seed-{index:07d}", tags_of(index)
    return {
        "id": flow_id,
        "name": name,
        "tags": tags,
        "labels": None,
        "created": occurred,
        "updated": occurred,
        "version": index + 1,
        "document": jsoncodec.dumps(flow_document(flow_id, occurred, occurred, name, tags, None)),
    }
