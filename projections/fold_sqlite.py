"""Applying a batch to a SQLite read model in one hop to aiosqlite's thread.

Through SQLAlchemy every statement is compiled, its rows processed in Python, and handed to
aiosqlite's thread and back: a dozen round trips per batch, and at ~8k messages/s the
projector's limit. Here the whole batch (decoding, the fold, every `executemany` with SQL
written once per table set, and the checkpoint) runs as one call in the thread that owns the
sqlite3 connection, inside the caller's transaction; sqlite3 releases the GIL while SQLite
works, so the event loop keeps reading the log meanwhile.

What is stored is byte for byte what SQLAlchemy stored (tests/unit/test_fold.py compares):
times as SQLAlchemy's SQLite DATETIME text, JSON columns as `json.dumps` text, documents as
BLOBs.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.model import format_occurred
from projections.fold import Stamps, fold
from projections.tables import CHECKPOINT_PROJECTION, LIVE, ReadModelTables, checkpoint

__all__ = ["STAMPS", "apply_in_thread", "sqlite_time"]

# Ids per `IN (...)` look-up: well below SQLite's bound-parameter limit.
_FETCH_CHUNK = 500
# Rows per multi-row INSERT (8 columns: 512 parameters; SQLite allows 32766).
_ROWS_PER_INSERT = 64
_INSERTS = frozenset({"insert_flow", "insert_tag", "park"})


def sqlite_time(value: datetime) -> str:
    """An aware time as SQLAlchemy's SQLite DATETIME stores it after UTCDateTime made it naive
    UTC: `YYYY-MM-DD HH:MM:SS.ffffff`, always with the fraction."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


def _document_time(stored: str) -> str:
    return format_occurred(datetime.fromisoformat(stored).replace(tzinfo=UTC))


STAMPS = Stamps(stored=sqlite_time, document_time=_document_time, json_value=json.loads)


class _Statements:
    """The SQL of one table set, written once."""

    def __init__(self, tables: ReadModelTables) -> None:
        flow, tag = f'"{tables.flow.name}"', f'"{tables.flow_tag.name}"'
        run, task = f'"{tables.flow_run.name}"', f'"{tables.task_run.name}"'
        deployment = f'"{tables.deployment.name}"'
        self.many: dict[str, tuple[str, ...]] = {
            "park": (
                f'INSERT INTO "{tables.parked_event.name}" (position, subject, reason) '
                "VALUES (?, ?, ?)",
            ),
            "insert_flow": (
                f"INSERT INTO {flow} (id, name, tags, labels, created, updated, version, "
                "document) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ),
            "insert_tag": (f"INSERT INTO {tag} (flow_id, tag) VALUES (?, ?)",),
            "update_flow": (
                f"UPDATE {flow} SET updated = ?, version = ?, document = ? WHERE id = ?",
            ),
            "update_tagged": (
                f"UPDATE {flow} SET updated = ?, version = ?, document = ?, tags = ? WHERE id = ?",
            ),
            "delete_tags": (f"DELETE FROM {tag} WHERE flow_id = ?",),
            # Prefect's foreign keys cascade a flow's deletion to its deployments, flow runs and
            # their task runs; doing it explicitly keeps SQLite and PostgreSQL alike.
            "delete_flows": (
                f"DELETE FROM {task} WHERE flow_run_id IN (SELECT id FROM {run} WHERE flow_id = ?)",
                f"DELETE FROM {run} WHERE flow_id = ?",
                f"DELETE FROM {deployment} WHERE flow_id = ?",
                f"DELETE FROM {tag} WHERE flow_id = ?",
                f"DELETE FROM {flow} WHERE id = ?",
            ),
        }
        self.fetch = f"SELECT id, name, tags, labels, created FROM {flow} WHERE id IN "


@functools.lru_cache(maxsize=8)
def _statements(tables: ReadModelTables) -> _Statements:
    return _Statements(tables)


_READ_CHECKPOINT = f'SELECT position FROM "{checkpoint.name}" WHERE projection = ?'
_MOVE_CHECKPOINT = f'UPDATE "{checkpoint.name}" SET position = ? WHERE projection = ?'
_FIRST_CHECKPOINT = f'INSERT INTO "{checkpoint.name}" (projection, position) VALUES (?, ?)'


def _fold_into(
    db: sqlite3.Connection,
    subjects: Subjects,
    batch: Sequence[StoredMessage],
    tables: ReadModelTables,
) -> None:
    sql = _statements(tables)
    writes = fold(subjects, batch, STAMPS)
    answer: Any = None
    while True:
        try:
            kind, rows = writes.send(answer)
        except StopIteration:
            return
        answer = None
        if kind == "fetch":
            answer = []
            for start in range(0, len(rows), _FETCH_CHUNK):
                ids = rows[start : start + _FETCH_CHUNK]
                query = sql.fetch + "(" + ", ".join("?" * len(ids)) + ")"
                answer.extend(db.execute(query, ids).fetchall())
            continue
        if kind in _INSERTS:
            _insert(db, sql.many[kind][0], rows)
            continue
        for statement in sql.many[kind]:
            _executemany(db, statement, rows)


def _executemany(db: sqlite3.Connection, statement: str, rows: list[Any]) -> None:
    if rows and not isinstance(rows[0], list | tuple):  # a list of ids
        rows = [(value,) for value in rows]
    db.executemany(statement, rows)


def _insert(db: sqlite3.Connection, statement: str, rows: list[Any]) -> None:
    """Inserts `_ROWS_PER_INSERT` rows per statement, the rest one by one: sqlite3 lets go of
    the GIL around every statement step, and taking it back can wait a whole switch interval
    (5 ms) while the event loop's thread is busy reading the log, so fewer steps per batch is
    what keeps this thread from stalling."""
    whole = len(rows) - len(rows) % _ROWS_PER_INSERT
    if whole:
        many = _many_rows(statement)
        width = len(rows[0])
        flat = [value for row in rows[:whole] for value in row]
        step = _ROWS_PER_INSERT * width
        db.executemany(many, [flat[start : start + step] for start in range(0, len(flat), step)])
    if whole < len(rows):
        db.executemany(statement, rows[whole:])


@functools.lru_cache(maxsize=32)
def _many_rows(statement: str) -> str:
    head, _, values = statement.partition(" VALUES ")
    return head + " VALUES " + ", ".join([values] * _ROWS_PER_INSERT)


def _apply_batch(
    db: sqlite3.Connection, subjects: Subjects, batch: Sequence[StoredMessage]
) -> None:
    """`projector.apply_batch` in the connection's thread: the caller holds the write lock."""
    found = db.execute(_READ_CHECKPOINT, (CHECKPOINT_PROJECTION,)).fetchone()
    applied = int(found[0]) if found is not None else 0
    batch = [message for message in batch if message.position > applied]
    if not batch:
        return
    _fold_into(db, subjects, batch, LIVE)
    position = batch[-1].position
    if db.execute(_MOVE_CHECKPOINT, (position, CHECKPOINT_PROJECTION)).rowcount == 0:
        db.execute(_FIRST_CHECKPOINT, (CHECKPOINT_PROJECTION, position))


async def apply_in_thread(
    conn: AsyncConnection,
    subjects: Subjects,
    batch: Sequence[StoredMessage],
    tables: ReadModelTables | None,
) -> None:
    """Fold `batch` into `tables` inside the caller's transaction, in aiosqlite's thread; with
    `tables` None, into the live set with the checkpoint read and moved (`apply_batch`; the
    caller has taken the write lock)."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    # aiosqlite runs every call on its connection in one thread, queued; `_execute` queues
    # ours (aiosqlite has no public way to run a function there: its own methods use this).
    run = getattr(driver, "_execute", None)
    if run is None:
        raise RuntimeError(
            f"the read model's SQLite driver {type(driver).__name__} has no aiosqlite "
            "`_execute`: install an aiosqlite release that has it (0.20 through 0.22 do)"
        )
    try:
        if tables is None:
            await run(_apply_batch, driver._conn, subjects, batch)
        else:
            await run(_fold_into, driver._conn, subjects, batch, tables)
    except sqlite3.Error as exc:
        # The project's callers catch SQLAlchemy's errors (as they did when SQLAlchemy ran
        # every statement): the same classes, with the driver's error as `orig`.
        raise DBAPIError.instance(
            "projector batch", None, exc, sqlite3.Error, dialect=conn.dialect
        ) from exc
