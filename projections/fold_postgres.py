"""Applying a batch to a PostgreSQL read model through asyncpg itself.

SQLAlchemy renders a new multi-row INSERT per batch size and processes every value in Python;
here each kind of write is one statement written once per table set, sent with asyncpg's
pipelined `executemany` (look-ups and deletes by `= ANY($1)`), on the connection and inside
the transaction the caller began through SQLAlchemy.

Values are those SQLAlchemy sent: aware UTC datetimes, `json.dumps` text for the JSON columns
(the engine's asyncpg JSON codec takes text), bytes for the document.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.model import format_occurred
from projections.fold import Stamps, fold
from projections.tables import ReadModelTables

__all__ = ["STAMPS", "apply_through_asyncpg"]


def _document_time(stored: datetime) -> str:
    return format_occurred(stored.astimezone(UTC))


def _json_value(stored: Any) -> Any:
    # The engine's codec decodes `json` columns; a connection without it gives text.
    return json.loads(stored) if isinstance(stored, str) else stored


STAMPS = Stamps(
    stored=lambda value, _text: value, document_time=_document_time, json_value=_json_value
)


class _Statements:
    """The SQL of one table set, written once."""

    def __init__(self, tables: ReadModelTables) -> None:
        flow, tag = f'"{tables.flow.name}"', f'"{tables.flow_tag.name}"'
        run, task = f'"{tables.flow_run.name}"', f'"{tables.task_run.name}"'
        deployment = f'"{tables.deployment.name}"'
        counted, tag_counted = f'"{tables.flow_count.name}"', f'"{tables.flow_tag_count.name}"'
        self.many: dict[str, str] = {
            "park": f'INSERT INTO "{tables.parked_event.name}" (position, subject, reason) '
            "VALUES ($1, $2, $3)",
            "insert_flow": f"INSERT INTO {flow} (id, name, tags, labels, created, updated, "
            "version, document) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            "insert_tag": f"INSERT INTO {tag} (flow_id, tag) VALUES ($1, $2)",
            "update_flow": f"UPDATE {flow} SET updated = $1, version = $2, document = $3 "
            "WHERE id = $4",
            "update_tagged": f"UPDATE {flow} SET updated = $1, version = $2, document = $3, "
            "tags = $4 WHERE id = $5",
            "count_flows": f"INSERT INTO {counted} (id, flows) VALUES (1, $1) ON CONFLICT (id) "
            f"DO UPDATE SET flows = {counted}.flows + excluded.flows",
        }
        # Rows sent as one array per column: one statement, however many rows.
        self.by_columns: dict[str, str] = {
            "count_tags": f"INSERT INTO {tag_counted} (tag, flows) "
            "SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (tag) "
            f"DO UPDATE SET flows = {tag_counted}.flows + excluded.flows",
        }
        ids = "ANY($1::varchar[])"
        self.by_ids: dict[str, tuple[str, ...]] = {
            "delete_tags": (f"DELETE FROM {tag} WHERE flow_id = {ids}",),
            # Prefect's foreign keys cascade a flow's deletion to its deployments, flow runs and
            # their task runs; doing it explicitly keeps SQLite and PostgreSQL alike.
            "delete_flows": (
                f"DELETE FROM {task} WHERE flow_run_id IN "
                f"(SELECT id FROM {run} WHERE flow_id = {ids})",
                f"DELETE FROM {run} WHERE flow_id = {ids}",
                f"DELETE FROM {deployment} WHERE flow_id = {ids}",
                f"DELETE FROM {tag} WHERE flow_id = {ids}",
                f"DELETE FROM {flow} WHERE id = {ids}",
            ),
            "drop_empty_tags": (
                f"DELETE FROM {tag_counted} WHERE tag = ANY($1::text[]) AND flows <= 0",
            ),
        }
        self.fetch = f"SELECT id, name, tags, labels, created FROM {flow} WHERE id = {ids}"


@functools.lru_cache(maxsize=8)
def _statements(tables: ReadModelTables) -> _Statements:
    return _Statements(tables)


async def apply_through_asyncpg(
    conn: AsyncConnection,
    subjects: Subjects,
    batch: Sequence[StoredMessage],
    tables: ReadModelTables,
) -> None:
    """Fold `batch` into `tables` inside the caller's transaction (no checkpoint)."""
    raw: Any = (await conn.get_raw_connection()).driver_connection
    if not raw.is_in_transaction():
        # SQLAlchemy begins its transaction at its first statement; ours must be inside it.
        await conn.exec_driver_sql("SELECT 1")
    sql = _statements(tables)
    writes = fold(subjects, batch, STAMPS)
    answer: Any = None
    statement = ""
    try:
        while True:
            try:
                kind, rows = writes.send(answer)
            except StopIteration:
                return
            answer = None
            if kind == "fetch":
                statement = sql.fetch
                answer = await raw.fetch(statement, rows)
            elif kind in sql.by_columns:
                statement = sql.by_columns[kind]
                await raw.execute(statement, *(list(column) for column in zip(*rows, strict=True)))
            elif kind in sql.by_ids:
                for statement in sql.by_ids[kind]:
                    await raw.execute(statement, rows)
            else:
                statement = sql.many[kind]
                await raw.executemany(statement, rows)
    except asyncpg.PostgresError as exc:
        # The project's callers catch SQLAlchemy's errors, as when SQLAlchemy sent these.
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            raise IntegrityError(statement, None, exc) from exc
        raise DBAPIError(statement, None, exc) from exc
