"""The read model's database: schema, connection settings, checkpoint."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.tables import CHECKPOINT_PROJECTION, checkpoint, metadata

__all__ = ["configure_engine", "create_schema", "read_checkpoint"]


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
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def read_checkpoint(conn: AsyncConnection) -> int:
    result = await conn.execute(
        select(checkpoint.c.position).where(checkpoint.c.projection == CHECKPOINT_PROJECTION)
    )
    value = result.scalar_one_or_none()
    return int(value) if value is not None else 0
