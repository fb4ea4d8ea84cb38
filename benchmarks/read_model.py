"""Seed a SQLite read model straight through the projector's apply code, for query scaling.

Going through the request path would take hours for a million flows; `apply_batch` is the code
the projector runs for every batch it reads from the log, so the rows, tag rows and checkpoint
are exactly what the service would have built from the same events.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks.synthetic import flow_messages
from events.log import StoredMessage
from events.subjects import Subjects
from projections.projector import apply_batch
from projections.store import configure_engine, create_schema

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
        """Add flows up to `flows`; returns the messages applied per second."""
        if self._engine is None:
            self._engine = create_async_engine(self.url)
            configure_engine(self._engine)
            await create_schema(self._engine)
        subjects = Subjects()
        started, applied = time.perf_counter(), 0
        batch: list[StoredMessage] = []
        for subject, data in flow_messages(subjects, self.flows, flows - self.flows, updates=False):
            self._position += 1
            batch.append(StoredMessage(subject, data, self._position))
            if len(batch) == _BATCH:
                applied += await self._apply(subjects, batch)
                batch = []
        if batch:
            applied += await self._apply(subjects, batch)
        self.flows = flows
        return applied / (time.perf_counter() - started)

    async def _apply(self, subjects: Subjects, batch: list[StoredMessage]) -> int:
        assert self._engine is not None
        async with self._engine.begin() as conn:
            await apply_batch(conn, subjects, batch)
        return len(batch)

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
