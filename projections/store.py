"""The read model's database: schema, connection settings, checkpoint."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.tables import CHECKPOINT_PROJECTION, checkpoint, metadata

__all__ = ["SCHEMA_LOCK_KEY", "configure_engine", "create_schema", "read_checkpoint"]


def configure_engine(engine: AsyncEngine, *, scratch: bool = False) -> None:
    """SQLite settings for a read model that is written and read at once.

    WAL lets queries read while the projector writes; `synchronous=NORMAL` may lose the last
    transactions on power loss, which is harmless here: the checkpoint is in the same
    transaction as the rows, so the projector simply applies those events again from the log.
    A `scratch` model (thrown away after one run, e.g. by `flows verify`) needs no durability at
    all, only the live model's foreign-key behaviour.
    """
    if engine.dialect.name != "sqlite":
        return
    pragmas = (
        ["journal_mode=MEMORY", "synchronous=OFF", "foreign_keys=ON"]
        if scratch
        else ["journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"]
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()


async def create_schema(engine: AsyncEngine) -> None:
    """Create the read model's tables that do not exist yet: safe with any number of processes
    at once against one database, and creating each table exactly once.

    `create_all` looks for each table, then creates it: two instances starting together both
    look, both create, and one fails (PostgreSQL: a unique violation in `pg_type`; SQLite:
    "table already exists"). So the looking and the creating happen in one transaction that
    first takes a lock for schema changes: a PostgreSQL advisory lock held to the end of the
    transaction, or SQLite's write lock (BEGIN IMMEDIATE; others wait up to busy_timeout).
    Whoever comes second finds the tables there and creates nothing.
    """
    async with engine.begin() as conn:
        await _lock_schema_changes(conn)
        await conn.run_sync(metadata.create_all)


# The PostgreSQL advisory lock for schema changes of the read model (any 64-bit number that
# nothing else in the database uses: these are the bytes of "flowsRM1" as a big-endian integer).
SCHEMA_LOCK_KEY = int.from_bytes(b"flowsRM1", "big", signed=True)


async def _lock_schema_changes(conn: AsyncConnection) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
    elif dialect == "sqlite":
        # Python's sqlite3 does not open a transaction before DDL by itself: without this each
        # CREATE would commit on its own, with no lock held between looking and creating.
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


async def read_checkpoint(conn: AsyncConnection) -> int:
    result = await conn.execute(
        select(checkpoint.c.position).where(checkpoint.c.projection == CHECKPOINT_PROJECTION)
    )
    value = result.scalar_one_or_none()
    return int(value) if value is not None else 0
