"""Taking the live read model's write lock at the start of a writing transaction.

On SQLite the database has one write lock. Python's sqlite3 module (legacy transaction
control, which SQLAlchemy's pysqlite and aiosqlite dialects keep) issues its implicit `BEGIN`
only before the first INSERT/UPDATE/DELETE: a SELECT before that runs in autocommit, outside the
transaction and unlocked. So "read the checkpoint, then write" was not atomic: a projector batch
could read the checkpoint, wait for the lock while a rebuild's swap committed a later checkpoint,
then write its (already applied) batch into the swapped-in tables and move the checkpoint
backwards. `BEGIN IMMEDIATE` takes the write lock before the first statement instead.

On PostgreSQL nothing is needed here: the checkpoint row lock (`SELECT ... FOR UPDATE`)
serialises the writers of the live model, and its lock queue is fair.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["take_write_lock"]


async def take_write_lock(conn: AsyncConnection) -> None:
    """Make the caller's transaction hold SQLite's write lock from here to its end.

    Call it first in an `engine.begin()` block. A transaction the sqlite3 module has already
    begun (it has written) holds the lock already. Waits at most the connection's busy timeout.
    """
    if conn.dialect.name != "sqlite":
        return
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is not None and driver.in_transaction:
        return
    await conn.exec_driver_sql("BEGIN IMMEDIATE")
