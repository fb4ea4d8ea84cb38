"""Rebuilding the read model from the log while the service keeps answering from it.

1. Build: a second table set (`rebuild_flow`, ...) is filled from the log with the projector's
   own apply code, in short transactions, while the live projector and queries carry on.
2. Catch up: keep reading until the log's end is within `SWAP_TAIL` messages.
3. Swap, in ONE short transaction that first takes the live projector's checkpoint lock: apply
   the final tail (so the new set reaches at least the live checkpoint), rename the live tables
   away, rename the new ones in, move the checkpoint. Both SQLite and PostgreSQL have
   transactional DDL, so readers see either the old model or the complete new one, never a
   half-built or empty one; the live projector resumes after the swapped-in position (it skips
   what is at or below the checkpoint).
A failure before the commit leaves the live model untouched and drops the half-built set.

Queries and the projector refer to tables by name, so after the swap they use the new tables.
SQLite cannot rename an index, so a rebuilt set keeps its build-time index names there
(`rb<token>_uq_flow__name`, which nothing refers to); PostgreSQL renames them to the live names
(index names share the table namespace there, and the next rebuild needs `rebuild_*` free).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import MetaData, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.contract.subjects import Subjects
from events.log import EventLog, StoredMessage
from projections.dialect import dialect_of
from projections.projector import apply_messages, lock_checkpoint, move_checkpoint
from projections.store import create_schema, write_schema_version
from projections.tables import (
    CHECKPOINT_PROJECTION,
    RETIRED_PREFIX,
    ReadModelTables,
    checkpoint,
    read_model_tables,
)

__all__ = ["RebuildReport", "Stage", "rebuild_online"]

log = logging.getLogger(__name__)

BUILD_PREFIX = "rebuild_"
# Messages per build transaction: big enough for executemany to pay, small enough that the
# live projector (which needs SQLite's one write lock too, and gets it next: see
# projections/write_lock.py) waits for at most one of them.
PAGE = 2000

# The build stops when a read brings at most this many messages: the rest, applied inside the
# swap transaction, is short, and so is the time the live projector waits.
SWAP_TAIL = 100

# Called at named stages ("built", "swapping"): progress for people, fault injection for tests.
Stage = Callable[[str], Awaitable[None]]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class RebuildReport:
    messages: int  # log messages the new table set holds the effect of (positions covered)
    events: int  # of which events (the rest, name markers and stored replies, were not read)
    position: int  # the log position the swapped-in model has applied
    elapsed_s: float
    swap_s: float  # how long the swap transaction held the live projector's lock

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def event_rate(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class _Tally:
    events: int = 0


async def _apply(
    conn: AsyncConnection,
    subjects: Subjects,
    batch: Sequence[StoredMessage],
    building: ReadModelTables,
    tally: _Tally,
) -> None:
    await apply_messages(conn, subjects, batch, building)
    tally.events += sum(1 for message in batch if subjects.flow_id_of(message.subject))


async def rebuild_online(
    engine: AsyncEngine,
    event_log: EventLog,
    subjects: Subjects,
    *,
    progress: Progress | None = None,
    stage: Stage | None = None,
    page: int = PAGE,
) -> RebuildReport:
    """Rebuild the read model from the log and swap it in; see the module docstring."""
    started = time.perf_counter()
    await create_schema(engine)
    await _ensure_checkpoint_row(engine)
    building = read_model_tables(MetaData(), BUILD_PREFIX, f"rb{uuid.uuid4().hex[:8]}_")
    await _drop_leftovers(engine)
    async with engine.begin() as conn:
        await conn.run_sync(building.metadata.create_all)
    try:
        end = await event_log.last_position()
        tally = _Tally()
        position = await _build(engine, event_log, subjects, building, page, progress, end, tally)
        if stage is not None:
            await stage("built")
        swap_started = time.perf_counter()
        async with engine.begin() as conn:
            position = await _swap(
                conn, event_log, subjects, building, position, page, stage, tally
            )
        swap_s = time.perf_counter() - swap_started
    except BaseException:
        await _drop_quietly(engine, building)
        raise
    if progress is not None:
        progress(position, max(end, position))
    await _drop_retired(engine)
    elapsed = time.perf_counter() - started
    # The swapped-in set holds every message up to `position`, name markers and replies too.
    return RebuildReport(position, tally.events, position, elapsed, swap_s)


async def _build(
    engine: AsyncEngine,
    event_log: EventLog,
    subjects: Subjects,
    building: ReadModelTables,
    page: int,
    progress: Progress | None,
    end: int,
    tally: _Tally,
) -> int:
    """Fill the new table set up to (nearly) the log's end; the position reached.

    Each pass reads only the events up to the log's end as it was when the pass began (name
    markers and stored replies, ~45% of the log, change nothing in the model), so the new set
    then holds the log up to that end. The log reads its next page while this one is written
    (SQLite and asyncpg work outside the event loop), so reading and writing overlap. The log
    may grow meanwhile, so passes repeat, outside the lock, until what is left is a short tail.
    """
    position = 0
    while True:
        pages = event_log.pages(
            position, until=end, max_batch=page, subject_filter=subjects.all_events
        )
        async with contextlib.aclosing(pages):
            async for batch in pages:
                async with engine.begin() as conn:
                    # Through the turnstile (projections/write_lock.py): a live projector
                    # batch waiting for the lock goes first, even from another process.
                    await dialect_of(conn).lock_writers(conn)
                    await _apply(conn, subjects, batch, building, tally)
                if progress is not None:
                    progress(batch[-1].position, end)
        position = end
        end = await event_log.last_position()
        if end - position <= SWAP_TAIL:  # the rest goes in the swap
            return position


async def _swap(
    conn: AsyncConnection,
    event_log: EventLog,
    subjects: Subjects,
    building: ReadModelTables,
    position: int,
    page: int,
    stage: Stage | None,
    tally: _Tally,
) -> int:
    # Take the live projector's lock first (SQLite's write lock, the checkpoint's row lock on
    # PostgreSQL), held until commit, so no live batch lands in between.
    live = await lock_checkpoint(conn)
    # The final tail: everything appended since the build's last page.
    pages = event_log.pages(position, max_batch=page)
    async with contextlib.aclosing(pages):
        async for batch in pages:
            await _apply(conn, subjects, batch, building, tally)
            position = batch[-1].position
    if position < live:
        raise RuntimeError(
            f"the rebuilt model reached log position {position}, behind the live model's "
            f"{live}: the log's end went backwards (was the stream purged or replaced?); "
            "nothing was swapped"
        )
    await dialect_of(conn).swap_in(conn, building)
    await move_checkpoint(conn, position)
    # The rebuilt tables are this code's: an older model is upgraded by the swap.
    await write_schema_version(conn)
    if stage is not None:
        await stage("swapping")  # still inside the transaction: a failure here rolls back all
    log.info(
        "swapped in the rebuilt read model at log position %d (live was at %d)", position, live
    )
    return position


async def _ensure_checkpoint_row(engine: AsyncEngine) -> None:
    """The swap locks the live checkpoint row, so it must exist (a fresh model has none)."""
    async with engine.begin() as conn:
        found = await conn.execute(
            select(checkpoint.c.position).where(checkpoint.c.projection == CHECKPOINT_PROJECTION)
        )
        if found.first() is not None:
            return
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(checkpoint).values(projection=CHECKPOINT_PROJECTION, position=0)
            )
    except IntegrityError:
        pass  # the live projector wrote its first checkpoint meanwhile


async def _drop_leftovers(engine: AsyncEngine) -> None:
    """Tables a crashed earlier rebuild left behind (never read by anything)."""
    for prefix in (BUILD_PREFIX, RETIRED_PREFIX):
        await _drop_quietly(engine, read_model_tables(MetaData(), prefix, prefix), strict=True)


async def _drop_retired(engine: AsyncEngine) -> None:
    retired = read_model_tables(MetaData(), RETIRED_PREFIX, RETIRED_PREFIX)
    await _drop_quietly(engine, retired)


async def _drop_quietly(
    engine: AsyncEngine, tables: ReadModelTables, *, strict: bool = False
) -> None:
    try:
        async with engine.begin() as conn:
            await conn.run_sync(tables.metadata.drop_all, checkfirst=True)
    except Exception:
        if strict:
            raise
        log.exception(
            "could not drop the tables %s*; they hold no live data: drop them by hand, or the "
            "next `flows rebuild` will",
            tables.prefix,
        )
