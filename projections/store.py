"""The read model's database: schema, connection settings, checkpoint."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.dialect import dialect_of
from projections.tables import CHECKPOINT_PROJECTION, checkpoint, metadata

__all__ = ["configure_engine", "create_schema", "read_checkpoint"]


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
    """
    async with engine.begin() as conn:
        await dialect_of(conn).lock_schema_changes(conn)
        await conn.run_sync(metadata.create_all)


async def read_checkpoint(conn: AsyncConnection) -> int:
    result = await conn.execute(
        select(checkpoint.c.position).where(checkpoint.c.projection == CHECKPOINT_PROJECTION)
    )
    value = result.scalar_one_or_none()
    return int(value) if value is not None else 0
