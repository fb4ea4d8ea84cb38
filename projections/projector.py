"""The projector: folds the event log into the read model.

Messages are applied in batches, each in one transaction together with the checkpoint (the last
log position applied), so a crash at any point neither loses nor doubles an event. What a batch
writes is folded once (projections/fold.py) into a few bulk writes that each backend sends its
own fast way: one call in aiosqlite's thread (fold_sqlite.py), asyncpg's executemany
(fold_postgres.py). Messages of the log that are not events (name markers, stored replies) only
move the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.contract.subjects import Subjects
from events.log import EventLog, StoredMessage
from projections import fold_sqlite
from projections.dialect import dialect_of
from projections.position_watcher import PositionWatcher
from projections.store import read_checkpoint
from projections.tables import CHECKPOINT_PROJECTION, LIVE, ReadModelTables, checkpoint

__all__ = ["Projector", "apply_batch", "apply_messages", "lock_checkpoint", "move_checkpoint"]

log = logging.getLogger(__name__)


# Events per catch-up batch (one transaction each). Each batch costs a fixed part (a read of
# the log, the write lock, hops to SQLite's thread, a commit) that 500-event batches paid
# ~25% of their time for: 2000 took a 300k-message backlog from ~33k to ~40k messages/s
# (py-spy, this 2-core machine). The same size as a rebuild's transactions, which hold the
# write lock as long (projections/rebuild.py, PAGE).
CATCH_UP_PAGE = 2000


class Projector:
    def __init__(
        self,
        engine: AsyncEngine,
        event_log: EventLog,
        subjects: Subjects,
        watcher: PositionWatcher,
        max_batch: int = 500,
        catch_up_batch: int = CATCH_UP_PAGE,
    ) -> None:
        self._engine = engine
        self._log = event_log
        self._subjects = subjects
        self._watcher = watcher
        self._max_batch = max_batch
        self._catch_up_batch = catch_up_batch

    async def load_checkpoint(self) -> int:
        async with self._engine.connect() as conn:
            position = await read_checkpoint(conn)
        self._watcher.advance(position)
        return position

    async def run(self) -> None:
        """Catch up from the checkpoint, then follow the log until cancelled."""
        position = await self.load_checkpoint()
        log.info("projector starting after log position %d", position)
        position = await self._catch_up(position)
        # aclosing: on cancellation the follower's subscription is closed at once, so a
        # shutdown never waits on messages nobody will read.
        async with contextlib.aclosing(self._log.follow(position, self._max_batch)) as batches:
            async for batch in batches:
                fresh = [message for message in batch if message.position > position]
                if not fresh:
                    continue
                await self._apply_with_retry(fresh)
                position = fresh[-1].position
                self._watcher.advance(position)

    async def _catch_up(self, position: int) -> int:
        """Fold the events up to the log's end as it is now, reading nothing else, and return
        the position the model then holds (that end).

        Name markers and stored replies are ~45% of a log's messages and only ever move the
        checkpoint, so a backlog is read without them (a filtered direct get): the checkpoint
        moves to each page's last event, and at the end to the log's end, which the filtered
        read has covered. What arrives meanwhile is the follower's, unfiltered: a follower
        must move the checkpoint to every new position, the last one too, which a
        linearizable read waits for (services/consistency.py)."""
        end = await self._log.last_position()
        if end <= position:
            return position
        pages = self._log.pages(
            position,
            until=end,
            max_batch=self._catch_up_batch,
            subject_filter=self._subjects.all_events,
        )
        async with contextlib.aclosing(pages):
            async for page in pages:
                await self._apply_with_retry(page)
                position = page[-1].position
                self._watcher.advance(position)
        if position < end:
            await self._apply_with_retry([], end)
            self._watcher.advance(end)
        return end

    async def _apply_with_retry(
        self, batch: Sequence[StoredMessage], through: int | None = None
    ) -> None:
        delay = 0.1
        while True:
            try:
                async with self._engine.begin() as conn:
                    await apply_batch(conn, self._subjects, batch, through)
                return
            except Exception:
                log.exception(
                    "projector could not write log positions %d..%d to the read model; "
                    "retrying in %.1fs (check the database named by FLOWS_DATABASE_URL)",
                    batch[0].position if batch else through,
                    batch[-1].position if batch else through,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


async def apply_batch(
    conn: AsyncConnection,
    subjects: Subjects,
    batch: Sequence[StoredMessage],
    through: int | None = None,
) -> None:
    """Apply a batch of log messages and move the checkpoint to `through` (by default the
    batch's last position; further when the batch was read with a filter that left out the
    messages after it), inside the caller's transaction.

    Messages at or below the stored checkpoint are skipped, so two projectors sharing one
    database (several service instances on PostgreSQL), or a rebuild racing the live projector,
    never apply an event twice: the checkpoint row is read under a lock in the same transaction.
    """
    if through is None:
        through = batch[-1].position
    dialect = dialect_of(conn)
    if dialect.name == "sqlite":
        # The write lock first (write_lock.py), then the checkpoint, the batch and the new
        # checkpoint in one hop to the connection's thread.
        await dialect.lock_writers(conn)
        await fold_sqlite.apply_in_thread(conn, subjects, batch, None, through)
        return
    applied = await lock_checkpoint(conn)
    batch = [message for message in batch if message.position > applied]
    if batch:
        await apply_messages(conn, subjects, batch)
    if through > applied:
        await move_checkpoint(conn, through)


async def apply_messages(
    conn: AsyncConnection,
    subjects: Subjects,
    batch: Sequence[StoredMessage],
    tables: ReadModelTables = LIVE,
) -> None:
    """Fold log messages into one table set, inside the caller's transaction; no checkpoint.

    The live projector, a rebuild (into its own table set) and an as-of scratch model all
    apply events through here (projections/fold.py), so they cannot disagree on what an event
    means.
    """
    if dialect_of(conn).name == "sqlite":
        await fold_sqlite.apply_in_thread(conn, subjects, batch, tables)
    else:
        # Imported here: asyncpg is installed only with the `postgres` extra.
        from projections import fold_postgres

        await fold_postgres.apply_through_asyncpg(conn, subjects, batch, tables)


async def lock_checkpoint(conn: AsyncConnection) -> int:
    """The live checkpoint, read under the lock that serialises every writer of the live
    model, held until the caller's transaction ends: the row lock on PostgreSQL, SQLite's one
    write lock (taken first, by `BEGIN IMMEDIATE`; see projections/write_lock.py)."""
    dialect = dialect_of(conn)
    await dialect.lock_writers(conn)
    query = select(checkpoint.c.position).where(checkpoint.c.projection == CHECKPOINT_PROJECTION)
    query = dialect.locked_checkpoint(query)
    value = (await conn.execute(query)).scalar_one_or_none()
    return int(value) if value is not None else 0


async def move_checkpoint(conn: AsyncConnection, position: int) -> None:
    """Record `position` as applied, inside the caller's transaction; on PostgreSQL also tell
    the instances following this model (delivered on commit: projections/checkpoint_notify.py)."""
    await dialect_of(conn).checkpoint_moved(conn, position)
    result = await conn.execute(
        update(checkpoint)
        .where(checkpoint.c.projection == CHECKPOINT_PROJECTION)
        .values(position=position)
    )
    if result.rowcount == 0:
        await conn.execute(
            insert(checkpoint).values(projection=CHECKPOINT_PROJECTION, position=position)
        )
