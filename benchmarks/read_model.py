"""Seed a SQLite read model for query scaling, with the rows the projector writes.

Going through the request path would take hours for a million flows, and even the projector's
apply code spends most of a seed decoding and checking synthetic events; so the seeder inserts
the rows the projector's `FlowCreated` fold writes (`projections/projector.py::_created`: the
flow row, one tag row per distinct tag, the checkpoint) directly, in transactions of 10,000.
The flows' names and tags are those of `benchmarks/synthetic.py`.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks.synthetic import tags_of
from events import jsoncodec
from events.model import flow_document
from events.timefmt import utcnow
from projections.projector import move_checkpoint
from projections.store import configure_engine, create_schema
from projections.tables import flow, flow_tag

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
                self._position += len(rows)
                await move_checkpoint(conn, self._position)
        added = flows - self.flows
        self.flows = flows
        return added / (time.perf_counter() - started)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()


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
