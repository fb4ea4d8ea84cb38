"""Counts answered from the kept counters (projections/kept_counts.py) agree with the SQL that
counts rows, after a random history of creates, updates and deletes, and through an online
rebuild that runs while the history is still being written.

Against a real nats-server and both read-model backends (tests/backends.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.contract.queries import parse_count_request
from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog
from projections.filter_sql import describe_filters, flows_where
from projections.kept_counts import kept_count
from projections.rebuild import rebuild_online
from projections.tables import flow, flow_count, flow_tag, flow_tag_count
from services.bootstrap import create_engine
from services.client import FlowsClient
from services.settings import Settings
from tests.integration.conftest import catch_up

TAGS = ["a", "b", "c", "spaced tag", "é"]

# Counted from the counters: every flow, however the filter spells it, or one tag.
KEPT: list[dict[str, Any]] = [
    {},
    {"flows": {}},
    {"flows": {"tags": {}}},
    {"flows": {"tags": {"all_": []}}},
    {"flows": {"name": {"like_": ""}, "id": {}}},
    {"flows": {"operator": "or_", "tags": {}, "name": {"like_": "no such name"}}},
    # `name: {}` is TRUE (a present sub-filter without criteria), and so is the `or_`.
    {"flows": {"operator": "or_", "tags": {"all_": ["a"]}, "name": {}}},
    *({"flows": {"tags": {"all_": [tag]}}} for tag in TAGS),
    {"flows": {"tags": {"all_": ["a", "a"]}}},
    {"flows": {"tags": {"all_": ["never used"]}}},
]
# Counted by the SQL path, as before.
NOT_KEPT: list[dict[str, Any]] = [
    {"deployments": {}},
    {"flows": {"tags": {"all_": ["a", "b"]}}},
    {"flows": {"tags": {"is_null_": True}}},
    {"flows": {"tags": {"all_": ["a"], "is_null_": False}}},
    {"flows": {"tags": {"all_": ["a"]}, "name": {"like_": "1"}}},
    {"flows": {"id": {"any_": []}}},  # `any_: []` matches nothing
    {"flows": {"operator": "or_", "tags": {"all_": ["a"]}, "name": {"like_": "1"}}},
]


@pytest.fixture
async def engine(service: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(service)
    yield engine
    await engine.dispose()


async def random_history(client: FlowsClient, pick: random.Random, steps: int) -> None:
    alive: list[str] = []
    for step in range(steps):
        tags = pick.choices(TAGS, k=pick.randrange(4))  # repeats too
        choice = pick.random()
        if choice < 0.45 or not alive:
            reply = await client.create(f"flow-{pick.randrange(40)}", tags=tags)
            if reply.status == 201:  # 200: the name was taken, nothing changed
                alive.append(reply.body["id"])
        elif choice < 0.75:
            await client.update(pick.choice(alive), tags=tags if step % 5 else None)
        else:
            flow_id = alive.pop(pick.randrange(len(alive)))
            await client.delete(flow_id)


async def sql_count(engine: AsyncEngine, body: dict[str, Any]) -> int:
    """The count as the general SQL path makes it, reading the flow rows."""
    filters = parse_count_request(body).filters
    async with engine.connect() as conn:
        where = flows_where(filters, conn.dialect.name)
        query = select(func.count()).select_from(flow)
        return int((await conn.scalar(query if where is None else query.where(where))) or 0)


async def counts_agree(client: FlowsClient, engine: AsyncEngine) -> None:
    for body in KEPT + NOT_KEPT:
        filters = parse_count_request(body).filters
        assert (kept_count(filters, describe_filters(filters)) is not None) == (body in KEPT)
        answered = (await client.request("query.count", body)).body
        assert answered == await sql_count(engine, body), body
    # And the counter rows are exactly a recount: no row for a tag no flow carries.
    async with engine.connect() as conn:
        total = (await conn.execute(select(flow_count.c.flows))).scalars().all()
        tag = flow_tag.c.tag
        recount = await conn.execute(select(tag, func.count()).group_by(tag))
        kept = await conn.execute(select(flow_tag_count.c.tag, flow_tag_count.c.flows))
        flows = await conn.scalar(select(func.count()).select_from(flow))
        assert total == [flows]
        assert sorted(map(tuple, kept)) == sorted(map(tuple, recount))


async def test_counter_answers_equal_the_sql_answers_through_a_history_and_a_rebuild(
    service: Settings, nc: NatsClient, client: FlowsClient, engine: AsyncEngine
) -> None:
    pick = random.Random(2026)
    await random_history(client, pick, 120)
    await catch_up(nc, service)
    await counts_agree(client, engine)

    # An online rebuild while the history goes on: its counters are the log's, swapped in whole.
    subjects = Subjects(service.subject_prefix)
    event_log = JetStreamLog(nc, subjects, service.stream)
    rebuilding = asyncio.create_task(rebuild_online(engine, event_log, subjects, page=25))
    await random_history(client, pick, 80)
    report = await rebuilding
    assert report.position > 0
    await random_history(client, pick, 20)  # the live projector goes on from the swapped model
    await catch_up(nc, service)
    await counts_agree(client, engine)
