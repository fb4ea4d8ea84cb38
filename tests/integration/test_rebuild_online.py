"""`flows rebuild` while the service runs: the rebuilt model is swapped in whole, queries keep
answering correct answers throughout, and a failed rebuild leaves the live model untouched.

Against a real nats-server and a real database (SQLite and PostgreSQL, tests/backends.py); the rebuild runs in-process on its own engine and connection,
as the `flows rebuild` process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog
from projections.rebuild import RebuildReport, rebuild_online
from services.bootstrap import create_engine
from services.client import FlowsClient
from services.settings import Settings


@pytest.fixture
async def engine(service: Settings) -> AsyncIterator[AsyncEngine]:
    """The rebuild's own engine on the service's database (a separate process would have one)."""
    engine = create_engine(service)
    yield engine
    await engine.dispose()


@pytest.fixture
def client(service: Settings, nc: NatsClient) -> FlowsClient:
    return FlowsClient(nc, service.subject_prefix)


async def run_rebuild(
    settings: Settings,
    nc: NatsClient,
    engine: AsyncEngine,
    stage: Callable[[str], Awaitable[None]] | None = None,
) -> RebuildReport:
    subjects = Subjects(settings.subject_prefix)
    event_log = JetStreamLog(nc, subjects, settings.stream)
    # Small pages: many build transactions, so the workload runs through the whole build.
    return await rebuild_online(engine, event_log, subjects, stage=stage, page=50)


async def table_identity(engine: AsyncEngine) -> object:
    """What changes when `flow` is replaced by a rebuilt table: its OID on PostgreSQL, its index
    names on SQLite (a rebuilt set keeps its build-time index names there)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            return (await conn.execute(text("SELECT CAST('flow' AS regclass)::oid"))).scalar_one()
        rows = await conn.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'flow'")
        )
        return sorted(row[0] for row in rows)


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # polling a condition set by the workload tasks


@dataclass
class Observed:
    """What clients have been answered so far; every answer is checked against it."""

    tags: dict[str, list[str]] = field(default_factory=dict)  # flow id -> tags last written
    max_count: int = 0
    commands: int = 0
    queries: int = 0
    wrong: list[str] = field(default_factory=list)


async def writer(client: FlowsClient, seen: Observed, name: str, stop: asyncio.Event) -> None:
    """Create, read back, update, read back: each read must show the write before it."""
    number = 0
    while not stop.is_set():
        number += 1
        created = await client.create(f"{name}-{number}", tags=["v0"])
        if created.status != 201:
            seen.wrong.append(f"create {name}-{number}: {created.status} {created.body}")
            return
        flow_id = created.body["id"]
        seen.tags[flow_id] = ["v0"]
        seen.commands += 1
        await expect_flow(client, seen, flow_id, ["v0"])
        updated = await client.update(flow_id, tags=["v1", name])
        if updated.status != 204:
            seen.wrong.append(f"update {flow_id}: {updated.status} {updated.body}")
            return
        seen.tags[flow_id] = ["v1", name]
        seen.commands += 1
        await expect_flow(client, seen, flow_id, ["v1", name])


async def expect_flow(client: FlowsClient, seen: Observed, flow_id: str, tags: list[str]) -> None:
    reply = await client.read(flow_id)
    seen.queries += 1
    if reply.status != 200 or reply.body["tags"] != tags:
        seen.wrong.append(f"read {flow_id} after writing {tags}: {reply.status} {reply.body}")


async def reader(client: FlowsClient, seen: Observed, stop: asyncio.Event) -> None:
    """Counts never drop (the model only moves forward) and a flow once seen stays visible."""
    chooser = random.Random(7)
    while not stop.is_set():
        floor = seen.max_count
        known = list(seen.tags.items())
        reply = await client.count()
        seen.queries += 1
        if reply.status != 200 or reply.body < floor:
            seen.wrong.append(f"count {reply.status} {reply.body} after {floor} was answered")
        else:
            seen.max_count = max(seen.max_count, reply.body)
        flow_id, _ = chooser.choice(known)
        found = await client.read(flow_id)
        seen.queries += 1
        if found.status != 200:
            seen.wrong.append(f"read {flow_id} (seen before): {found.status} {found.body}")
        page = await client.paginate(limit=10, flows={"tags": {"all_": ["seed"]}})
        seen.queries += 1
        if page.status != 200 or page.body["count"] != SEEDED:
            # The whole body: an error reply (a 503, say) has `detail`, not `count`.
            seen.wrong.append(f"paginate seed: {page.status} {page.body}")


SEEDED = 300


async def seed(client: FlowsClient, seen: Observed) -> None:
    for start in range(0, SEEDED, 50):
        replies = await asyncio.gather(
            *(client.create(f"seed-{i}", tags=["seed"]) for i in range(start, start + 50))
        )
        for reply in replies:
            seen.tags[reply.raise_for_status().body["id"]] = ["seed"]


@contextlib.asynccontextmanager
async def workload(client: FlowsClient, seen: Observed) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(writer(client, seen, f"w{k}", stop)) for k in range(3)]
    tasks += [asyncio.create_task(reader(client, seen, stop)) for _ in range(3)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_a_rebuild_under_commands_and_queries_never_serves_a_wrong_answer(
    service: Settings, nc: NatsClient, client: FlowsClient, engine: AsyncEngine
) -> None:
    seen = Observed()
    await seed(client, seen)
    before = await table_identity(engine)

    async with workload(client, seen):
        at_start = (seen.commands, seen.queries)

        async def stage(name: str) -> None:
            if name == "built":  # let the log move on, so the catch-up and the tail have work
                commands, queries = seen.commands, seen.queries
                await until(lambda: seen.commands >= commands + 10, "10 more commands")
                await until(lambda: seen.queries >= queries + 20, "20 more queries")

        report = await run_rebuild(service, nc, engine, stage)
        during = (seen.commands - at_start[0], seen.queries - at_start[1])
        # And after the swap, with the live projector writing into the swapped-in tables:
        commands = seen.commands
        await until(lambda: seen.commands >= commands + 10, "10 commands after the swap")

    assert not seen.wrong, seen.wrong[:10]
    assert during[0] >= 10 and during[1] >= 20, during
    assert await table_identity(engine) != before, "the rebuilt tables were not swapped in"
    assert not {n for n in await table_names(engine) if n.startswith(("rebuild_", "retired_"))}
    assert report.messages >= SEEDED and report.position > 0
    # The final model holds exactly what the clients wrote.
    total = (await client.count()).raise_for_status().body
    assert total == len(seen.tags)
    for flow_id, tags in seen.tags.items():
        assert (await client.read(flow_id)).raise_for_status().body["tags"] == tags


@pytest.mark.parametrize("failing_stage", ["built", "swapping"])
async def test_a_failed_rebuild_leaves_the_live_model_untouched(
    service: Settings,
    nc: NatsClient,
    client: FlowsClient,
    engine: AsyncEngine,
    failing_stage: str,
) -> None:
    """`built`: after the build, before the swap. `swapping`: inside the swap transaction,
    after the tables were renamed and the checkpoint moved, so only a rollback of the
    transactional DDL can leave the live model as it was."""
    made = [(await client.create(f"kept-{i}", tags=["k"])).raise_for_status() for i in range(20)]
    await client.update(made[0].body["id"], tags=["changed"])
    live_rows = (await client.filter(sort="NAME_ASC")).raise_for_status().body
    before = await table_identity(engine)

    class Injected(Exception):
        pass

    async def stage(name: str) -> None:
        if name == failing_stage:
            raise Injected(name)

    with pytest.raises(Injected):
        await run_rebuild(service, nc, engine, stage)

    assert (await client.filter(sort="NAME_ASC")).raise_for_status().body == live_rows
    assert await table_identity(engine) == before
    assert not {n for n in await table_names(engine) if n.startswith(("rebuild_", "retired_"))}
    # The live projector still writes the live model.
    after = (await client.create("after-the-failure")).raise_for_status()
    assert (await client.read(after.body["id"])).status == 200
    assert (await client.count()).body == 21
    # And a rebuild that succeeds next gives the same answers.
    await run_rebuild(service, nc, engine)
    rows = (await client.filter(sort="NAME_ASC")).raise_for_status().body
    assert [row for row in rows if row["name"] != "after-the-failure"] == live_rows
