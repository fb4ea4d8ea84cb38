"""Where SQLite and PostgreSQL differ for the read model, in one place: engine settings, the
locks that serialise writers and schema changes, reading one moment, telling followers the
checkpoint moved, swapping in a rebuilt model, and what text each can store.

`dialect_of(conn_or_engine)` gives the one for a connection. Two differences stay where they
are, because they are the SQL itself: filter clauses are compiled per dialect in
`filter_sql.py`, and column types adapt in `tables.py` (SQLAlchemy's type decorators).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.checkpoint_notify import notify_checkpoint
from projections.sqlite_reads import SQLiteDocuments
from projections.tables import LIVE, RETIRED_PREFIX, ReadModelTables
from projections.write_lock import take_write_lock

__all__ = ["ReadModelDialect", "dialect_named", "dialect_of"]

SelectT = TypeVar("SelectT", bound=Select[Any])

# The PostgreSQL advisory lock for schema changes of the read model (any 64-bit number that
# nothing else in the database uses: these are the bytes of "flowsRM1" as a big-endian integer).
SCHEMA_LOCK_KEY = int.from_bytes(b"flowsRM1", "big", signed=True)


class ReadModelDialect(Protocol):
    name: str
    # Several service instances share one model (one projector at a time: leadership.py).
    shared_by_instances: bool
    # Whether text columns can hold U+0000 (PostgreSQL's `text` cannot).
    stores_nul: bool

    def engine_options(self) -> dict[str, Any]: ...

    def configure(self, engine: AsyncEngine, *, scratch: bool) -> None: ...

    async def lock_schema_changes(self, conn: AsyncConnection) -> None: ...

    async def lock_writers(self, conn: AsyncConnection) -> None: ...

    def locked_checkpoint(self, query: SelectT) -> SelectT: ...

    async def checkpoint_moved(self, conn: AsyncConnection, position: int) -> None: ...

    async def read_one_moment(self, conn: AsyncConnection) -> None: ...

    async def swap_in(self, conn: AsyncConnection, building: ReadModelTables) -> None: ...

    def documents_in_place(self, engine: AsyncEngine) -> SQLiteDocuments | None: ...


class _SQLite:
    name = "sqlite"
    shared_by_instances = False
    stores_nul = True

    def engine_options(self) -> dict[str, Any]:
        return {}

    def configure(self, engine: AsyncEngine, *, scratch: bool) -> None:
        """WAL lets queries read while the projector writes; `synchronous=NORMAL` may lose the
        last transactions on power loss, which is harmless here: the checkpoint is in the same
        transaction as the rows, so the projector simply applies those events again from the
        log. A `scratch` model (thrown away after one run) needs no durability at all, only the
        live model's foreign-key behaviour."""
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

    async def lock_schema_changes(self, conn: AsyncConnection) -> None:
        # Python's sqlite3 does not open a transaction before DDL by itself: without this each
        # CREATE would commit on its own, with no lock held between looking and creating.
        await conn.exec_driver_sql("BEGIN IMMEDIATE")

    async def lock_writers(self, conn: AsyncConnection) -> None:
        # SQLite's one write lock, taken first and fairly (write_lock.py).
        await take_write_lock(conn)

    def locked_checkpoint(self, query: SelectT) -> SelectT:
        return query  # the write lock already serialises every writer

    async def checkpoint_moved(self, conn: AsyncConnection, position: int) -> None:
        return None  # one instance per model: nobody follows it

    async def read_one_moment(self, conn: AsyncConnection) -> None:
        # pysqlite opens a transaction only before a write, so each SELECT would see its own
        # moment; an explicit BEGIN makes all of them read one WAL snapshot.
        await conn.exec_driver_sql("BEGIN")

    async def swap_in(self, conn: AsyncConnection, building: ReadModelTables) -> None:
        # Renaming a parent rewrites its children's foreign keys to the new name, so each set
        # stays consistent through the renames. The retired tables are dropped after commit:
        # with foreign keys on, SQLite deletes every row of a dropped table, which is not
        # "short".
        for table in LIVE.tables:
            await conn.execute(
                text(f'ALTER TABLE "{table.name}" RENAME TO "{RETIRED_PREFIX}{table.name}"')
            )
        for table in building.tables:
            await conn.execute(
                text(f'ALTER TABLE "{table.name}" RENAME TO "{building.canonical(table)}"')
            )

    def documents_in_place(self, engine: AsyncEngine) -> SQLiteDocuments | None:
        """Flow documents read on the loop's thread (projections/sqlite_reads.py), for a model
        in a file; an in-memory one is the pool's own."""
        database = engine.url.database
        if not database or database == ":memory:":
            return None
        return SQLiteDocuments(Path(database))


class _PostgreSQL:
    name = "postgresql"
    shared_by_instances = True
    stores_nul = False

    def engine_options(self) -> dict[str, Any]:
        # A server's connections can die under the pool (restarts, idle timeouts).
        return {"pool_pre_ping": True}

    def configure(self, engine: AsyncEngine, *, scratch: bool) -> None:
        return None

    async def lock_schema_changes(self, conn: AsyncConnection) -> None:
        await conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))

    async def lock_writers(self, conn: AsyncConnection) -> None:
        return None  # the checkpoint row's lock serialises writers (locked_checkpoint)

    def locked_checkpoint(self, query: SelectT) -> SelectT:
        return query.with_for_update()

    async def checkpoint_moved(self, conn: AsyncConnection, position: int) -> None:
        # Delivered on commit to the instances following this model (checkpoint_notify.py).
        await notify_checkpoint(conn, position)

    async def read_one_moment(self, conn: AsyncConnection) -> None:
        await conn.execution_options(isolation_level="REPEATABLE READ")

    def documents_in_place(self, engine: AsyncEngine) -> SQLiteDocuments | None:
        return None  # a server is always a network round trip away

    async def swap_in(self, conn: AsyncConnection, building: ReadModelTables) -> None:
        # `flow` first: every query locks it before any other read-model table, so taking it
        # first cannot deadlock with a query; the rest follow in the same order.
        names = ", ".join(f'"{table.name}"' for table in LIVE.tables)
        await conn.execute(text(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE"))
        # Dropping is a catalog change on PostgreSQL (files go at commit): do it here, which
        # frees the live index names for the new set's indexes.
        for table in reversed(LIVE.tables):
            await conn.execute(text(f'DROP TABLE "{table.name}"'))
        for table in building.tables:
            live_name = building.canonical(table)
            await conn.execute(text(f'ALTER TABLE "{table.name}" RENAME TO "{live_name}"'))
            for listing, rename in _POSTGRESQL_NAMED:
                found = (await conn.execute(text(listing), {"table": live_name})).scalars().all()
                for name in found:
                    renamed = building.canonical_name(name)
                    if renamed != name:
                        statement = rename.format(table=live_name, old=name, new=renamed)
                        await conn.execute(text(statement))


# What a rebuilt table brings with build-time names on PostgreSQL, and how to rename it:
# its indexes (the primary key's too; they share the table namespace) and foreign keys.
_POSTGRESQL_NAMED = (
    (
        "SELECT indexname FROM pg_indexes "
        "WHERE schemaname = current_schema() AND tablename = :table",
        'ALTER INDEX "{old}" RENAME TO "{new}"',
    ),
    (
        "SELECT conname FROM pg_constraint "
        "WHERE conrelid = CAST(:table AS regclass) AND contype = 'f'",
        'ALTER TABLE "{table}" RENAME CONSTRAINT "{old}" TO "{new}"',
    ),
)

_DIALECTS: dict[str, ReadModelDialect] = {"sqlite": _SQLite(), "postgresql": _PostgreSQL()}


def dialect_named(name: str) -> ReadModelDialect:
    try:
        return _DIALECTS[name]
    except KeyError:
        raise ValueError(
            f"the read model supports SQLite and PostgreSQL, not {name!r}: set "
            "FLOWS_DATABASE_URL to a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"
        ) from None


def dialect_of(bind: AsyncConnection | AsyncEngine) -> ReadModelDialect:
    return dialect_named(bind.dialect.name)
