"""Scratch read models: throwaway SQLite models filled by replaying the log, the one way as-of
queries, `flows verify` and the tests build one.

A scratch model has the live model's tables and foreign-key behaviour and none of its
durability (projections/store.py), because it is rebuilt from the log rather than recovered.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from events.contract.subjects import Subjects
from events.log import EventLog
from projections.projector import apply_messages
from projections.store import configure_engine, create_schema

__all__ = ["create_scratch_model", "open_scratch_model", "replay_into", "scratch_model"]


async def create_scratch_model(path: Path | None = None) -> AsyncEngine:
    """An empty read model, in memory or in the file at `path`; the caller disposes of it."""
    if path is None:
        # One connection for the engine's lifetime: an in-memory database lives as long as it.
        engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    else:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    configure_engine(engine, scratch=True)
    try:
        await create_schema(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


def open_scratch_model(path: Path) -> AsyncEngine:
    """A read-only engine on a scratch model already in the file at `path` (no schema work);
    the caller disposes of it. Read-only: the file may be a snapshot's (projections/snapshots.py)
    linked in, which nothing may write."""
    engine = create_async_engine(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true")
    configure_engine(engine, scratch=True)
    return engine


@contextlib.asynccontextmanager
async def scratch_model(path: Path | None = None) -> AsyncIterator[AsyncEngine]:
    """`create_scratch_model`, disposed of on exit."""
    engine = await create_scratch_model(path)
    try:
        yield engine
    finally:
        await engine.dispose()


async def replay_into(
    engine: AsyncEngine,
    event_log: EventLog,
    subjects: Subjects,
    *,
    after: int = 0,
    until: int | None = None,
    max_batch: int = 2000,
) -> int:
    """Apply the log after `after` (a model already holding the log up to it) up to `until`
    (its end if None) with the projector's own apply code, a transaction a page; the number of
    messages applied."""
    applied = 0
    pages = event_log.pages(after, until=until, max_batch=max_batch)
    async with contextlib.aclosing(pages):  # a failed page stops the read ahead too
        async for page in pages:
            async with engine.begin() as conn:
                await apply_messages(conn, subjects, page)
            applied += len(page)
    return applied
