"""The fast fold (projections/fold*.py) stores exactly what the SQLAlchemy Core apply stored,
byte for byte, on both backends: so `flows verify` compares a model written by either equal,
and a model written before the fold existed is not rebuilt for nothing."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from events.contract.commands import CreateFlow, DeleteFlow, UpdateFlow
from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.memory_log import InMemoryLog
from events.model import Event, encode_event
from events.writer import FlowWriter
from projections.projector import apply_messages
from projections.store import configure_engine, create_schema
from projections.tables import LIVE, ReadModelTables, read_model_tables
from tests.reference_apply import reference_apply_messages

SUBJECTS = Subjects("t")


@pytest.fixture
async def engine(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    (tmp_path / "data").mkdir(exist_ok=True)  # where `database_url` puts a SQLite model
    engine = create_async_engine(database_url)
    configure_engine(engine)
    await create_schema(engine)
    yield engine
    await engine.dispose()


async def written_log() -> list[StoredMessage]:
    """Creates (labels with a 70-bit integer, non-ASCII names and tags, repeated tags), updates
    with and without tags, of flows created in the same batch and before it, deletes, a freed
    name taken again, and what is parked (not JSON, an unknown type, a bad flow id)."""
    log = InMemoryLog()
    ticks = itertools.count()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Whole seconds too: the document omits a zero fraction.
    clock = lambda: start + timedelta(milliseconds=500 * next(ticks))  # noqa: E731
    writer = FlowWriter(log, SUBJECTS, clock=clock)
    ids = []
    for i in range(14):
        labels: dict[str, Any] | None = {"i": i, "big": 2**70, "ü": "ä\u2603", "f": 0.1}
        created = await writer.execute(
            CreateFlow(
                name=f"flöw-{i:02d}",
                tags=["db", "db", f"t\u00e9{i % 3}"],
                labels=labels if i % 3 else None,
            )
        )
        ids.append(created.body["id"])  # type: ignore[union-attr]
        if i % 4 == 1:
            await writer.execute(UpdateFlow(id=ids[-1], tags=["right-away"]))
    for i, flow_id in enumerate(ids):
        await writer.execute(UpdateFlow(id=flow_id, **({"tags": [f"u{i}", "ü"]} if i % 2 else {})))
    await writer.execute(UpdateFlow(id=ids[0], tags=[]))
    await writer.execute(DeleteFlow(id=ids[2]))
    await writer.execute(CreateFlow(name="flöw-02", tags=["again"], labels=None))
    await writer.execute(DeleteFlow(id=ids[5]))
    messages = list(log.messages)
    position = messages[-1].position
    # An event whose time has an offset, and one of an unknown flow (both applied, as the
    # writer never writes them but the log may hold them).
    odd = Event(
        id="e1",
        type="FlowCreated",
        flow_id="00000000-0000-4000-8000-0000000000aa",
        occurred=datetime(2026, 2, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2))),
        data={"name": "offset", "tags": ["z", "a"], "labels": {"k": 1.5}},
    )
    ghost = Event(
        id="e2",
        type="FlowUpdated",
        flow_id="00000000-0000-4000-8000-0000000000bb",
        occurred=datetime(2026, 2, 3, tzinfo=UTC),
        data={"tags": ["g"]},
    )
    extra = [
        (SUBJECTS.event(odd.flow_id), encode_event(odd)),
        (SUBJECTS.event(ghost.flow_id), encode_event(ghost)),
        (SUBJECTS.event(odd.flow_id), b"not json"),
        (SUBJECTS.event(odd.flow_id), b'{"type": "FlowRenamed"}'),
        (SUBJECTS.event("x"), encode_event(Event("e3", "FlowDeleted", "not-a-uuid", odd.occurred, {"name": "x"}))),
    ]  # fmt: skip
    for offset, (subject, data) in enumerate(extra, start=1):
        messages.append(StoredMessage(subject, data, position + offset))
    return messages


async def dump(conn: AsyncConnection, tables: ReadModelTables) -> dict[str, list[Any]]:
    """Every row of the set as the database holds it: text as text, bytes as bytes, in the
    flow table's insertion order (SQLite) or by id."""
    if conn.dialect.name == "sqlite":
        as_stored = "*, typeof(tags), typeof(labels), typeof(created), typeof(document)"
        flow_order = "rowid"
    else:
        as_stored = "id, name, tags::text, labels::text, created, updated, version, document"
        flow_order = "id"
    found: dict[str, list[Any]] = {}
    for table in tables.tables:
        columns = as_stored if table is tables.flow else "*"
        order = flow_order if table is tables.flow else "1, 2"
        rows = await conn.execute(text(f'SELECT {columns} FROM "{table.name}" ORDER BY {order}'))
        found[tables.canonical(table)] = [tuple(row) for row in rows]
    return found


@pytest.mark.parametrize("batch_size", [1, 3, 7, 1000])
async def test_the_fold_stores_what_the_sqlalchemy_apply_stored(
    engine: AsyncEngine, batch_size: int
) -> None:
    messages = await written_log()
    reference = read_model_tables(MetaData(), "ref_", "ref_")
    async with engine.begin() as conn:
        await conn.run_sync(reference.metadata.create_all)
    for start in range(0, len(messages), batch_size):
        page = messages[start : start + batch_size]
        async with engine.begin() as conn:
            await apply_messages(conn, SUBJECTS, page)
        async with engine.begin() as conn:
            await reference_apply_messages(conn, SUBJECTS, page, reference)
    async with engine.connect() as conn:
        fast, slow = await dump(conn, LIVE), await dump(conn, reference)
    assert len(fast["flow"]) == 14 and len(fast["parked_event"]) == 3
    assert fast == slow
