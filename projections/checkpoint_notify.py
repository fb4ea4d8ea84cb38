"""Telling every instance on a shared PostgreSQL read model that the checkpoint moved.

The transaction that moves the checkpoint also sends `pg_notify(<channel>, <position>)`.
PostgreSQL delivers a notification only when its transaction commits, and only once the commit
is visible to other sessions, so a listener that hears position N can answer from the model as
of N at once: followers (projections/leadership.py) wake their waiting queries with it instead
of polling the checkpoint.

The channel is per schema: a NOTIFY reaches every listener of the database, and one database
may hold several read models, one per schema. (A channel name has at most 63 bytes: the schema
name is cut to fit; two read models whose schema names share their first 46 characters would
hear each other, and a follower would only wake early, then find its position not reached.)
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["checkpoint_channel", "notify_checkpoint"]

# Evaluated by the server on both sides, so the sender and the listeners agree on the schema.
_CHANNEL = "'flows_checkpoint:' || left(current_schema(), 46)"


async def notify_checkpoint(conn: AsyncConnection, position: int) -> None:
    """Inside the caller's transaction (PostgreSQL only): listeners hear `position` on commit."""
    statement = text(f"SELECT pg_notify({_CHANNEL}, :position)")
    await conn.execute(statement, {"position": str(position)})


async def checkpoint_channel(conn: AsyncConnection) -> str:
    """The channel `notify_checkpoint` sends on, for this connection's schema."""
    return str((await conn.execute(text(f"SELECT {_CHANNEL}"))).scalar_one())
