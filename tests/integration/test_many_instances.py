"""Several instances answer as one service (real nats-server, each instance its own SQLite
model): a query sent after a command was acknowledged sees it, whichever instance answers
either, with no header at all (reads are linearizable by default, as Prefect's one database
makes them); `Flows-Consistency: eventual` relaxes that and is refused if misspelt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from services.settings import Settings
from tests.integration.conftest import running
from tests.integration.wire import assert_success, assert_validation_error, call


@pytest.fixture
async def three(settings: Settings, nc: NatsClient) -> AsyncIterator[Settings]:
    """Three instances of one service, in one queue group, each with its own read model."""
    others = [
        dataclasses.replace(settings, data_dir=settings.data_dir.parent / f"instance-{n}")
        for n in (2, 3)
    ]
    async with running(settings, nc), running(others[0], nc), running(others[1], nc):
        yield settings


async def test_a_plain_client_always_reads_what_was_acknowledged_before(
    three: Settings, nc: NatsClient
) -> None:
    prefix = three.subject_prefix
    for i in range(60):
        created = await call(nc, prefix, "cmd.create", {"name": f"one-{i}", "tags": ["a"]})
        assert_success(created, 201)
        flow_id = created.json["id"]
        # No header, no session: each query may reach any of the three instances.
        read = await call(nc, prefix, "query.read", {"id": flow_id})
        assert read.status == 200, (i, read)
        assert read.json == created.json
        assert_success(await call(nc, prefix, "cmd.update", {"id": flow_id, "tags": [f"v{i}"]}), 204)
        assert (await call(nc, prefix, "query.read", {"id": flow_id})).json["tags"] == [f"v{i}"]
        assert (await call(nc, prefix, "query.count", {})).json == i + 1


async def test_eventual_reads_are_allowed_and_a_misspelt_level_is_refused(
    three: Settings, nc: NatsClient
) -> None:
    prefix = three.subject_prefix
    reply = await call(nc, prefix, "query.count", {}, {"Flows-Consistency": "eventual"})
    assert_success(reply, 200)
    wrong = await call(nc, prefix, "query.count", {}, {"Flows-Consistency": "strong"})
    assert_validation_error(
        wrong,
        [
            {
                "type": "literal_error",
                "loc": ["header", "Flows-Consistency"],
                "msg": "Input should be 'linearizable' or 'eventual'",
                "input": "strong",
                "ctx": {"expected": "'linearizable' or 'eventual'"},
            }
        ],
        None,
    )
