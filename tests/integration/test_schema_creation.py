"""Instances starting together against one fresh database create the read model's schema
exactly once, and none of them fails (issue 13: one of two PostgreSQL start-ups used to crash on
`pg_type_typname_nsp_index`, a unique violation of two concurrent CREATE TABLEs).

Each "instance" is an engine of its own (its own connections, as a process would have), already
connected before the race starts so that connecting does not space the attempts out.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from projections.store import configure_engine, create_schema
from projections.tables import metadata
from tests.backends import fresh_postgres_database, sqlite_url

INSTANCES = 4
ROUNDS = 5


async def test_postgresql_schema_is_created_once_by_concurrent_instances(
    postgres_url: str,
) -> None:
    for _ in range(ROUNDS):
        name = f"flows_schema_{uuid.uuid4().hex[:10]}"
        async with fresh_postgres_database(postgres_url, name) as url:
            await assert_created_once(url)


async def test_sqlite_schema_is_created_once_by_concurrent_instances(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        await assert_created_once(sqlite_url(tmp_path / f"round-{round_}.db"))


async def assert_created_once(url: str) -> None:
    engines = [create_async_engine(url) for _ in range(INSTANCES)]
    created: list[tuple[str, str]] = []
    try:
        for engine in engines:
            configure_engine(engine)
            record_creates(engine, created)
            async with engine.connect():  # a pooled connection, ready for the race
                pass
        results = await asyncio.gather(
            *(create_schema(engine) for engine in engines), return_exceptions=True
        )
    finally:
        for engine in engines:
            await engine.dispose()
    failures = [result for result in results if isinstance(result, BaseException)]
    assert not failures, failures
    tables = [name for kind, name in created if kind == "TABLE"]
    assert sorted(tables) == sorted(metadata.tables), created  # every table, each once
    indexes = [name for kind, name in created if kind == "INDEX"]
    assert len(indexes) == len(set(indexes)), created


def record_creates(engine: AsyncEngine, created: list[tuple[str, str]]) -> None:
    """Append ("TABLE" | "INDEX", name) to `created` for each CREATE the engine sends."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = statement.split()
        if words[:2] == ["CREATE", "TABLE"]:
            created.append(("TABLE", words[2]))
        elif words[:2] == ["CREATE", "INDEX"] or words[:3] == ["CREATE", "UNIQUE", "INDEX"]:
            created.append(("INDEX", words[words.index("INDEX") + 1]))
