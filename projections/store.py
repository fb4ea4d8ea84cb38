"""The read model's database: schema, connection settings, checkpoint."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.tables import CHECKPOINT_PROJECTION, checkpoint, metadata

__all__ = ["configure_engine", "create_schema", "read_checkpoint"]


def configure_engine(engine: AsyncEngine) -> None:
    """SQLite settings for a read model that is written and read at once.

    WAL lets queries read while the projector writes; `synchronous=NORMAL` may lose the last
    transactions on power loss, which is harmless here: the checkpoint is in the same
    transaction as the rows, so the projector simply applies those events again from the log.
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
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
