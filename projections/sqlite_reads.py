"""Reads of a flow's document from the live SQLite model on the event loop's own thread.

A read by id or name is one index lookup that SQLite answers in microseconds, while the general
path (SQLAlchemy's pool and statement, aiosqlite's hand-off to its thread and back) costs a
millisecond of the one Python thread. So the live SQLite model keeps one plain `sqlite3`
connection, read-only, whose two statements are prepared once (sqlite3's statement cache) and
run in place. In WAL mode a reader never waits for the projector's writes; should the database
still be busy (a checkpoint of the WAL, a rebuild's swap), `busy_timeout=0` makes it say so at
once instead of stalling the loop, and the caller answers through the general path.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from projections.tables import flow

__all__ = ["SQLiteBusy", "SQLiteDocuments"]

_BY_ID = f"SELECT {flow.c.document.name} FROM {flow.name} WHERE {flow.c.id.name} = ?"
_BY_NAME = f"SELECT {flow.c.document.name} FROM {flow.name} WHERE {flow.c.name.name} = ?"


class SQLiteBusy(Exception):
    """The database could not be read at once: use the general path."""


class SQLiteDocuments:
    def __init__(self, database: Path) -> None:
        self._db = sqlite3.connect(
            f"file:{database}?mode=ro",
            uri=True,
            isolation_level=None,  # autocommit: each SELECT reads the latest commit
            check_same_thread=False,  # only ever used on the loop's thread, but closed anywhere
        )
        self._db.execute("PRAGMA busy_timeout = 0")

    def by_id(self, flow_id: str) -> bytes | None:
        """The document of the flow with this id (any UUID spelling), or None."""
        try:
            canonical = str(uuid.UUID(flow_id))
        except ValueError:
            return None
        return self._one(_BY_ID, canonical)

    def by_name(self, name: str) -> bytes | None:
        return self._one(_BY_NAME, name)

    def _one(self, statement: str, key: str) -> bytes | None:
        try:
            row = self._db.execute(statement, (key,)).fetchone()
        except sqlite3.OperationalError as exc:  # "database is locked", a table being swapped
            raise SQLiteBusy(str(exc)) from exc
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self._db.close()
