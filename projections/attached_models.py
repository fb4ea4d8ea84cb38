"""Writing model files through connections kept open: each file is attached in turn.

An as-of answer replays a few dozen messages into a copy of a snapshot. Opening an SQLAlchemy
engine on that copy, its aiosqlite thread and connection, and disposing of them again cost
~3 ms of CPU per answer (most of the worker's share), paid on the niced worker while the
client waits. So the worker keeps a few connections open for its whole life, each on an empty
in-memory database, and writes a model by attaching its file: SQLite looks a table name up in
`main` first and, with no table of that name there, in the attached file, so the projector's
own statements (unqualified, projections/fold_sqlite.py) write the file unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

__all__ = ["AttachedModels"]

_NAME = "model"


class AttachedModels:
    def __init__(self, connections: int) -> None:
        """At most `connections` files written at once (more wait for a connection)."""
        # Each pooled connection has its own private, empty in-memory `main`.
        self._engine: AsyncEngine = create_async_engine(
            "sqlite+aiosqlite://",
            poolclass=AsyncAdaptedQueuePool,
            pool_size=connections,
            max_overflow=0,
            # `writing` ends every transaction itself: no ROLLBACK hand-off on each return.
            pool_reset_on_return=None,
        )

        @event.listens_for(self._engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # The scratch model's foreign-key behaviour (projections/dialect.py), per connection.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    @contextlib.asynccontextmanager
    async def writing(self, path: Path) -> AsyncIterator[AsyncConnection]:
        """A connection whose unqualified tables are the model in the file at `path`; each
        `conn.begin()` block is a transaction of that file. A scratch model's durability: none
        (it is thrown away after one use)."""
        async with self._engine.connect() as conn:
            # One hand-off to the connection's thread each (a statement through SQLAlchemy is
            # several, and each waits for the niced worker to be scheduled again). ATTACH
            # cannot run inside a transaction: none is open before the first write.
            driver: Any = (await conn.get_raw_connection()).driver_connection
            literal = str(path).replace("'", "''")
            await driver.executescript(
                f"ATTACH DATABASE '{literal}' AS {_NAME};"
                f"PRAGMA {_NAME}.journal_mode=MEMORY; PRAGMA {_NAME}.synchronous=OFF;"
            )
            try:
                yield conn
            finally:
                await conn.rollback()  # anything a failed replay left open
                try:
                    await driver.executescript(f"DETACH DATABASE {_NAME};")
                except Exception:
                    await conn.invalidate()  # never lend out a connection with a file attached
                    raise

    async def close(self) -> None:
        await self._engine.dispose()
