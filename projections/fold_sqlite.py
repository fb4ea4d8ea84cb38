"""Applying a batch to a SQLite read model in two or three hops to aiosqlite's thread.

Through SQLAlchemy every statement is compiled, its rows processed in Python, and handed to
aiosqlite's thread and back: a dozen round trips per batch, and at ~8k messages/s the
projector's limit. Here the batch is folded on the event loop's thread (projections/fold.py)
and its writes go to the thread that owns the sqlite3 connection in groups, as one call each:
the checkpoint's read, everything up to a look-up the fold needs answered, the rest with the
new checkpoint; SQL is written once per table set, rows go by `executemany`, all inside the
caller's transaction.

Why the fold is not in that thread too (it was, at first: one hop per batch): Python code
there holds the GIL against the event loop, which is reading the log meanwhile; in the thread
now runs only SQLite, which lets go of the GIL. Both cost the same CPU per message (~75 us
against ~130 us through SQLAlchemy, measured on this 2-core machine under load); this one
keeps the connection's thread out of the loop's way.

What is stored is byte for byte what SQLAlchemy stored (tests/integration/test_fold_identity.py
compares):
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
from projections.fold import Op, Stamps, fold
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


def _stored_time(value: datetime, text: str) -> str:
    """`sqlite_time(value)`, cut from its `format_occurred` text when that has the usual
    shape (`YYYY-MM-DDTHH:MM:SS[.ffffff]Z`): string slices instead of an aware `isoformat`."""
    if len(text) == 27 and text[4] == "-":
        return f"{text[:10]} {text[11:26]}"
    if len(text) == 20 and text[4] == "-":
        return f"{text[:10]} {text[11:19]}.000000"
    return sqlite_time(value)


def _document_time(stored: str) -> str:
    return format_occurred(datetime.fromisoformat(stored).replace(tzinfo=UTC))


STAMPS = Stamps(stored=_stored_time, document_time=_document_time, json_value=json.loads)


class _Statements:
    """The SQL of one table set, written once."""

    def __init__(self, tables: ReadModelTables) -> None:
        flow, tag = f'"{tables.flow.name}"', f'"{tables.flow_tag.name}"'
        run, task = f'"{tables.flow_run.name}"', f'"{tables.task_run.name}"'
        deployment = f'"{tables.deployment.name}"'
        counted, tag_counted = f'"{tables.flow_count.name}"', f'"{tables.flow_tag_count.name}"'
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
            "count_flows": (
                f"INSERT INTO {counted} (id, flows) VALUES (1, ?) ON CONFLICT (id) "
                f"DO UPDATE SET flows = {counted}.flows + excluded.flows",
            ),
            "count_tags": (
                f"INSERT INTO {tag_counted} (tag, flows) VALUES (?, ?) ON CONFLICT (tag) "
                f"DO UPDATE SET flows = {tag_counted}.flows + excluded.flows",
            ),
            "drop_empty_tags": (f"DELETE FROM {tag_counted} WHERE tag = ? AND flows <= 0",),
        }
        self.fetch = f"SELECT id, name, tags, labels, created FROM {flow} WHERE id IN "


@functools.lru_cache(maxsize=8)
def _statements(tables: ReadModelTables) -> _Statements:
    return _Statements(tables)


_READ_CHECKPOINT = f'SELECT position FROM "{checkpoint.name}" WHERE projection = ?'
_MOVE_CHECKPOINT = f'UPDATE "{checkpoint.name}" SET position = ? WHERE projection = ?'
_FIRST_CHECKPOINT = f'INSERT INTO "{checkpoint.name}" (projection, position) VALUES (?, ?)'


def _write(db: sqlite3.Connection, sql: _Statements, writes: list[Op]) -> list[Any]:
    """Run `writes` in order, in the connection's thread; what the last one fetched, if any."""
    for kind, rows in writes:
        if kind == "fetch":
            found: list[Any] = []
            for start in range(0, len(rows), _FETCH_CHUNK):
                ids = rows[start : start + _FETCH_CHUNK]
                query = sql.fetch + "(" + ", ".join("?" * len(ids)) + ")"
                found.extend(db.execute(query, ids).fetchall())
            return found
        if kind == "checkpoint":
            (position,) = rows
            if db.execute(_MOVE_CHECKPOINT, (position, CHECKPOINT_PROJECTION)).rowcount == 0:
                db.execute(_FIRST_CHECKPOINT, (CHECKPOINT_PROJECTION, position))
        elif kind in _INSERTS:
            _insert(db, sql.many[kind][0], rows)
        else:
            for statement in sql.many[kind]:
                _executemany(db, statement, rows)
    return []


def _read_checkpoint(db: sqlite3.Connection) -> int:
    found = db.execute(_READ_CHECKPOINT, (CHECKPOINT_PROJECTION,)).fetchone()
    return int(found[0]) if found is not None else 0


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


async def apply_in_thread(
    conn: AsyncConnection,
    subjects: Subjects,
    batch: Sequence[StoredMessage],
    tables: ReadModelTables | None,
    through: int | None = None,
) -> None:
    """Fold `batch` into `tables` inside the caller's transaction, in aiosqlite's thread; with
    `tables` None, into the live set with the checkpoint read and moved to `through`, by default
    the batch's last position (`apply_batch`; the caller has taken the write lock)."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    # aiosqlite runs every call on its connection in one thread, queued; `_execute` queues
    # ours (aiosqlite has no public way to run a function there: its own methods use this).
    run = getattr(driver, "_execute", None)
    if run is None:
        raise RuntimeError(
            f"the read model's SQLite driver {type(driver).__name__} has no aiosqlite "
            "`_execute`: install an aiosqlite release that has it (0.20 through 0.22 do)"
        )
    db = driver._conn
    try:
        if tables is None:  # apply_batch: the checkpoint first
            if through is None:
                through = batch[-1].position
            applied = await run(_read_checkpoint, db)
            if through <= applied:
                return
            batch = [message for message in batch if message.position > applied]
        sql = _statements(LIVE if tables is None else tables)
        folding = fold(subjects, batch, STAMPS)
        writes: list[Op] = []
        fetched: Any = None
        while True:
            try:
                writes.append(folding.send(fetched))
            except StopIteration:
                break
            fetched = None
            if writes[-1][0] == "fetch":  # the fold needs the answer: send what there is
                fetched = await run(_write, db, sql, writes)
                writes = []
        if tables is None:
            writes.append(("checkpoint", [through]))
        if writes:
            await run(_write, db, sql, writes)
    except sqlite3.Error as exc:
        # The project's callers catch SQLAlchemy's errors (as they did when SQLAlchemy ran
        # every statement): the same classes, with the driver's error as `orig`.
        raise DBAPIError.instance(
            "projector batch", None, exc, sqlite3.Error, dialect=conn.dialect
        ) from exc
