"""The read model's database: schema (and its version), connection settings, checkpoint."""

from __future__ import annotations

from sqlalchemy import delete, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.dialect import dialect_of
from projections.tables import (
    CHECKPOINT_PROJECTION,
    SCHEMA_VERSION,
    checkpoint,
    flow,
    metadata,
    schema_version,
)

__all__ = [
    "configure_engine",
    "create_schema",
    "read_checkpoint",
    "read_schema_version",
    "write_schema_version",
]


def configure_engine(engine: AsyncEngine, *, scratch: bool = False) -> None:
    """The connection settings of a read model written and read at once (projections/dialect.py);
    a `scratch` model, thrown away after one run, needs no durability."""
    dialect_of(engine).configure(engine, scratch=scratch)


async def create_schema(engine: AsyncEngine) -> None:
    """Create the read model's tables that do not exist yet: safe with any number of processes
    at once against one database, and creating each table exactly once.

    `create_all` looks for each table, then creates it: two instances starting together both
    look, both create, and one fails (PostgreSQL: a unique violation in `pg_type`; SQLite:
    "table already exists"). So the looking and the creating happen in one transaction that
    first takes a lock for schema changes: a PostgreSQL advisory lock held to the end of the
    transaction, or SQLite's write lock (BEGIN IMMEDIATE; others wait up to busy_timeout).
    Whoever comes second finds the tables there and creates nothing.

    A model created here is of the current SCHEMA_VERSION, and says so; tables that were there
    already keep whatever version they recorded (none, if written before versions were).
    """
    async with engine.begin() as conn:
        await dialect_of(conn).lock_schema_changes(conn)
        fresh = not await conn.run_sync(lambda sync: inspect(sync).has_table(flow.name))
        await conn.run_sync(metadata.create_all)
        if fresh:
            await write_schema_version(conn)


async def read_schema_version(conn: AsyncConnection) -> int | None:
    """The version the live tables recorded; None for a model written before versions were."""
    result = await conn.execute(select(schema_version.c.version))
    value = result.scalar_one_or_none()
    return int(value) if value is not None else None


async def write_schema_version(conn: AsyncConnection) -> None:
    """Record, in the caller's transaction, that the live tables are of the current version:
    created so, or rebuilt so (a rebuild records it in its swap's transaction)."""
    await conn.execute(delete(schema_version))
    await conn.execute(insert(schema_version).values(id=1, version=SCHEMA_VERSION))


async def read_checkpoint(conn: AsyncConnection) -> int:
    result = await conn.execute(
        select(checkpoint.c.position).where(checkpoint.c.projection == CHECKPOINT_PROJECTION)
    )
    value = result.scalar_one_or_none()
    return int(value) if value is not None else 0
