"""A throwaway PostgreSQL database for a benchmark: created empty, dropped (forcibly) after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

__all__ = ["fresh_database"]


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, prefix: str = "flows_bench") -> AsyncIterator[str]:
    """A new database on the server of `server_url` (any database URL there): its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield f"{server_url.rpartition('/')[0]}/{name}"
    finally:
        # FORCE: connections of a service that was killed must not keep the database alive.
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
