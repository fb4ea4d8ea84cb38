"""The projector against SQLite: batches, checkpoint, parking, and agreement with `evolve`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from events.contract.commands import CreateFlow, DeleteFlow, DeleteFlows, UpdateFlow
from events.contract.subjects import Subjects
from events.log import AppendMessage
from events.memory_log import InMemoryLog
from events.model import decode_event
from events.rules import FlowState, evolve
from events.writer import CommandResult, FlowWriter
from projections.position_watcher import PositionWatcher
from projections.projector import Projector, apply_batch, lock_checkpoint, move_checkpoint
from projections.store import configure_engine, create_schema, read_checkpoint
from projections.tables import flow, flow_tag, parked_event

SUBJECTS = Subjects("t")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'read.db'}")
    configure_engine(engine)
    await create_schema(engine)
    yield engine
    await engine.dispose()


def make_writer(log: InMemoryLog) -> FlowWriter:
    ticks = itertools.count()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return FlowWriter(log, SUBJECTS, clock=lambda: start + timedelta(milliseconds=next(ticks)))


async def workload(log: InMemoryLog) -> None:
    """Creates, updates (with and without tags), deletes and a re-create of a freed name."""
    writer = make_writer(log)
    ids = []
    for i in range(12):
        outcome = await writer.execute(
            CreateFlow(name=f"flow-{i:02d}", tags=["db", "db", f"t{i % 3}"], labels={"i": i})
        )
        assert isinstance(outcome, CommandResult)
        ids.append(outcome.body["id"])
    for i, flow_id in enumerate(ids):
        tags = {"tags": [f"u{i}"]} if i % 2 else {}
        await writer.execute(UpdateFlow(id=flow_id, **tags))
    await writer.execute(UpdateFlow(id=ids[0], tags=[]))
    await writer.execute(DeleteFlows(flow_ids=tuple(ids[:3])))
    await writer.execute(DeleteFlow(id=ids[5]))
    await writer.execute(CreateFlow(name="flow-05", tags=["again"], labels=None))


def folded(log: InMemoryLog) -> dict[str, FlowState]:
    states: dict[str, FlowState | None] = {}
    for message in log.messages:
        flow_id = SUBJECTS.flow_id_of(message.subject)
        if flow_id:
            states[flow_id] = evolve(
                states.get(flow_id), decode_event(message.data, message.position)
            )
    return {k: v for k, v in states.items() if v is not None and not v.deleted}


async def rows(engine: AsyncEngine) -> dict[str, dict[str, object]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(flow))
        return {row["id"]: dict(row) for row in result.mappings()}


async def tags_index(engine: AsyncEngine) -> set[tuple[str, str]]:
    async with engine.connect() as conn:
        return {(r.flow_id, r.tag) for r in await conn.execute(select(flow_tag))}


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
async def test_any_batching_gives_the_rows_that_folding_the_events_gives(
    engine: AsyncEngine, batch_size: int
) -> None:
    log = InMemoryLog()
    await workload(log)
    for start in range(0, len(log.messages), batch_size):
        async with engine.begin() as conn:
            await apply_batch(conn, SUBJECTS, log.messages[start : start + batch_size])
    expected = folded(log)
    actual = await rows(engine)
    assert set(actual) == set(expected)
    for flow_id, state in expected.items():
        row = actual[flow_id]
        assert (row["name"], row["tags"], row["labels"]) == (state.name, state.tags, state.labels)
        assert (row["created"], row["updated"], row["version"]) == (
            state.created,
            state.updated,
            state.version,
        )
    assert await tags_index(engine) == {
        (flow_id, tag) for flow_id, state in expected.items() for tag in state.tags
    }
    async with engine.connect() as conn:
        assert await read_checkpoint(conn) == len(log.messages)


async def test_a_batch_at_or_below_the_checkpoint_is_not_applied_twice(engine: AsyncEngine) -> None:
    log = InMemoryLog()
    await workload(log)
    async with engine.begin() as conn:
        await apply_batch(conn, SUBJECTS, log.messages)
    before = await rows(engine)
    async with engine.begin() as conn:  # a second projector, or a restart that re-reads
        await apply_batch(conn, SUBJECTS, log.messages[5:])
    assert await rows(engine) == before


async def test_the_checkpoint_is_read_under_the_write_lock_held_until_commit(
    engine: AsyncEngine,
) -> None:
    """No other writer (a rebuild's swap) can move the checkpoint between a batch's read of it
    and its commit. Python's sqlite3 runs a SELECT before the first write outside the
    transaction, so without `BEGIN IMMEDIATE` the read took no lock, and a batch the swap had
    already applied was written again and moved the checkpoint backwards."""
    other = create_async_engine(engine.url, connect_args={"timeout": 0.05})
    try:
        async with engine.begin() as conn:
            assert await lock_checkpoint(conn) == 0
            with pytest.raises(OperationalError, match="database is locked"):
                async with other.begin() as intruder:
                    await move_checkpoint(intruder, 99)
            await move_checkpoint(conn, 7)
    finally:
        await other.dispose()
    async with engine.connect() as conn:
        assert await read_checkpoint(conn) == 7


async def test_a_failed_transaction_leaves_rows_and_checkpoint_as_they_were(
    engine: AsyncEngine,
) -> None:
    log = InMemoryLog()
    await workload(log)
    with contextlib.suppress(RuntimeError):
        async with engine.begin() as conn:
            await apply_batch(conn, SUBJECTS, log.messages)
            raise RuntimeError("crash before commit")
    assert await rows(engine) == {}
    async with engine.connect() as conn:
        assert await read_checkpoint(conn) == 0


async def test_a_malformed_event_is_parked_with_its_reason_and_the_rest_applied(
    engine: AsyncEngine,
) -> None:
    log = InMemoryLog()
    writer = make_writer(log)
    await writer.execute(CreateFlow(name="before", tags=[], labels={}))
    await log.append([AppendMessage(SUBJECTS.event("not-a-flow"), b"{not json")])
    await writer.execute(CreateFlow(name="after", tags=[], labels={}))
    async with engine.begin() as conn:
        await apply_batch(conn, SUBJECTS, log.messages)
    assert {row["name"] for row in (await rows(engine)).values()} == {"before", "after"}
    async with engine.connect() as conn:
        parked = (await conn.execute(select(parked_event))).mappings().all()
    assert [(p["position"], "not JSON" in p["reason"]) for p in parked] == [(3, True)]


async def test_the_projector_follows_the_log_and_wakes_waiters(engine: AsyncEngine) -> None:
    log = InMemoryLog()
    watcher = PositionWatcher()
    projector = Projector(engine, log, SUBJECTS, watcher)
    task = asyncio.create_task(projector.run())
    try:
        outcome = await make_writer(log).execute(CreateFlow(name="live", tags=["x"]))
        assert isinstance(outcome, CommandResult)
        assert await watcher.wait_for(outcome.position, timeout_s=5)
        assert [row["name"] for row in (await rows(engine)).values()] == ["live"]
        assert not await watcher.wait_for(outcome.position + 1, timeout_s=0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_projector_resumes_from_its_checkpoint(engine: AsyncEngine) -> None:
    log = InMemoryLog()
    await workload(log)
    async with engine.begin() as conn:
        await apply_batch(conn, SUBJECTS, log.messages[:10])
    watcher = PositionWatcher()
    assert await Projector(engine, log, SUBJECTS, watcher).load_checkpoint() == 10
    assert watcher.position == 10


class _ReadSpy(InMemoryLog):
    """An in-memory log that keeps every message its readers were given."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[str] = []

    async def read(self, after: int, limit: int, subject_filter: str | None = None):  # type: ignore[no-untyped-def]
        found = await super().read(after, limit, subject_filter)
        self.given.extend(message.subject for message in found)
        return found


async def test_a_backlog_is_caught_up_from_its_events_alone_to_the_logs_end(
    engine: AsyncEngine,
) -> None:
    """Name markers and stored replies are not read while catching up, yet the checkpoint
    reaches the log's end, a marker here, which a linearizable read waits for."""
    log = _ReadSpy()
    await workload(log)
    end = len(log.messages)
    assert SUBJECTS.flow_id_of(log.messages[-1].subject) is None  # the log ends in a marker
    watcher = PositionWatcher()
    task = asyncio.create_task(Projector(engine, log, SUBJECTS, watcher, catch_up_batch=4).run())
    try:
        assert await watcher.wait_for(end, timeout_s=5)
        assert log.given and all(SUBJECTS.flow_id_of(subject) for subject in log.given)
        assert len(log.given) > 4  # in several batches
        assert {flow_id: row["name"] for flow_id, row in (await rows(engine)).items()} == {
            flow_id: state.name for flow_id, state in folded(log).items()
        }
        async with engine.connect() as conn:
            assert await read_checkpoint(conn) == end
        # What comes next is followed live, every message, so the checkpoint keeps up with
        # the log's end whatever is appended last.
        outcome = await make_writer(log).execute(CreateFlow(name="after", tags=[]))
        assert isinstance(outcome, CommandResult)
        assert await watcher.wait_for(len(log.messages), timeout_s=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_batch_moves_the_checkpoint_through_positions_it_does_not_hold(
    engine: AsyncEngine,
) -> None:
    log = InMemoryLog()
    await workload(log)
    first_event = log.messages[0]
    async with engine.begin() as conn:
        await apply_batch(conn, SUBJECTS, [first_event], through=first_event.position + 1)
    async with engine.begin() as conn:
        await apply_batch(conn, SUBJECTS, [], through=5)
    async with engine.begin() as conn:
        await apply_batch(conn, SUBJECTS, [], through=3)  # behind: changes nothing
        assert await read_checkpoint(conn) == 5
    assert len(await rows(engine)) == 1
