"""Catching up with a backlog from its events alone (name markers and stored replies are not
read), on JetStream and both read-model backends: the live projector and a rebuild reach the
log's end, a name marker, and agree on what they hold."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.contract.commands import CreateFlow, DeleteFlow, UpdateFlow
from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, StreamSettings
from events.writer import CommandResult, FlowWriter
from projections.position_watcher import PositionWatcher
from projections.projector import Projector
from projections.rebuild import rebuild_online
from projections.store import create_schema, read_checkpoint
from projections.tables import flow, flow_count
from services.bootstrap import create_engine
from services.nats_connection import connect_nats
from services.settings import Settings


@pytest.fixture
async def engine(read_model: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(read_model)
    await create_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def event_log(read_model: Settings) -> AsyncIterator[JetStreamLog]:
    nc = await connect_nats(read_model, "catch-up-test", retry=False)  # raw subscriptions
    tag = uuid.uuid4().hex[:8]
    log = JetStreamLog(nc, Subjects(f"k{tag}"), f"K{tag}", timeout_s=5)
    await log.ensure_stream(StreamSettings(f"K{tag}"))
    try:
        yield log
    finally:
        await nc.close()


async def a_history(log: JetStreamLog) -> set[str]:
    """Creates (an event and a name marker each), updates and a delete; the names left."""
    writer = FlowWriter(log, log.subjects)
    ids = []
    for number in range(40):
        outcome = await writer.execute(CreateFlow(name=f"f{number}", tags=[f"t{number % 3}"]))
        assert isinstance(outcome, CommandResult)
        ids.append(outcome.body["id"])
    for flow_id in ids[::4]:
        await writer.execute(UpdateFlow(id=flow_id, tags=["u"]))
    await writer.execute(DeleteFlow(id=ids[1]))
    await writer.execute(CreateFlow(name="last", tags=[]))  # the log ends in its name marker
    return {f"f{number}" for number in range(40) if number != 1} | {"last"}


async def held(engine: AsyncEngine) -> tuple[set[str], int, int | None]:
    async with engine.connect() as conn:
        names = set((await conn.execute(select(flow.c.name))).scalars())
        counted = (await conn.execute(select(flow_count.c.flows))).scalar_one_or_none()
        return names, await read_checkpoint(conn), counted


async def test_the_projector_and_a_rebuild_catch_up_to_a_log_ending_in_a_marker(
    engine: AsyncEngine, event_log: JetStreamLog
) -> None:
    names = await a_history(event_log)
    end = await event_log.last_position()
    last = (await event_log.read(end - 1, 1))[0]
    assert event_log.subjects.flow_id_of(last.subject) is None  # a name marker

    watcher = PositionWatcher()
    projector = Projector(engine, event_log, event_log.subjects, watcher, catch_up_batch=7)
    task = asyncio.create_task(projector.run())
    try:
        assert await watcher.wait_for(end, timeout_s=10)
        assert await held(engine) == (names, end, len(names))

        report = await rebuild_online(engine, event_log, event_log.subjects, page=9)
        assert (report.position, report.messages) == (end, end)
        assert report.events == sum(
            1 for m in await event_log.read(0, end) if event_log.subjects.flow_id_of(m.subject)
        )
        assert await held(engine) == (names, end, len(names))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
