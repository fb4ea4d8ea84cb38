"""NATS service discovery ($SRV.PING / INFO / STATS) with a plain NATS client, two instances.

Both instances of one service (same prefix and stream, each with its own SQLite model) answer
discovery as `flows`, each with its own id; per-endpoint stats count the requests each one
answered, and a 503 counts as an error with its text as `last_error`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient

from events.contract.subjects import AUDITS, COMMANDS, HEALTH, QUERIES
from services.settings import Settings
from tests.integration.conftest import projector_held, running
from tests.integration.wire import assert_error, assert_success, call

ENDPOINTS = {*COMMANDS, *QUERIES, *AUDITS, *HEALTH}


@pytest.fixture
async def two_instances(settings: Settings, nc: NatsClient) -> AsyncIterator[list[Settings]]:
    first = settings
    second = dataclasses.replace(settings, data_dir=settings.data_dir.parent / "second")
    async with running(first, nc), running(second, nc):
        yield [first, second]


async def gather_replies(
    nc: NatsClient, subject: str, prefix: str, expected: int, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """Publish one request on `subject` and collect the answers of this test's instances (other
    tests' services share the server) until `expected` have come."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []
    subscription = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, b"", reply=inbox)
        deadline = time.monotonic() + timeout_s
        while len(answers) < expected:
            message = await subscription.next_msg(timeout=max(deadline - time.monotonic(), 0.01))
            body = orjson.loads(message.data)
            if body.get("metadata", {}).get("subject_prefix") == prefix:
                answers.append(body)
    finally:
        await subscription.unsubscribe()
    return answers


async def test_two_instances_are_discovered_with_their_endpoints(
    two_instances: list[Settings], nc: NatsClient
) -> None:
    prefix = two_instances[0].subject_prefix
    pings = await gather_replies(nc, "$SRV.PING", prefix, 2)
    assert {ping["type"] for ping in pings} == {"io.nats.micro.v1.ping_response"}
    assert {ping["name"] for ping in pings} == {"flows"}
    assert len({ping["id"] for ping in pings}) == 2
    assert {ping["version"] for ping in pings} == {"0.1.0"}
    assert pings[0]["metadata"] == {
        "stream": two_instances[0].stream,
        "subject_prefix": prefix,
        "read_model": "sqlite",
        "pid": str(os.getpid()),  # both instances run in this test's process
        "projector": "local",  # each projects into its own SQLite model
    }
    infos = await gather_replies(nc, "$SRV.INFO.flows", prefix, 2)
    for info in infos:
        assert info["type"] == "io.nats.micro.v1.info_response"
        endpoints = {e["name"]: (e["subject"], e["queue_group"]) for e in info["endpoints"]}
        assert set(endpoints) == ENDPOINTS
        assert endpoints["create"] == (f"{prefix}.cmd.create", "flows")
        assert endpoints["history"] == (f"{prefix}.audit.history", "flows")
    # One instance by its id.
    one = pings[0]["id"]
    [only] = await gather_replies(nc, f"$SRV.PING.flows.{one}", prefix, 1)
    assert only["id"] == one


async def test_stats_count_real_traffic_and_5xx_as_errors(
    two_instances: list[Settings], nc: NatsClient
) -> None:
    prefix = two_instances[0].subject_prefix
    created = await call(nc, prefix, "cmd.create", {"name": "counted"})
    assert_success(created, 201)
    for _ in range(20):
        assert_success(await call(nc, prefix, "query.read", {"id": created.json["id"]}), 200)
    assert_error(await call(nc, prefix, "query.read", {"id": "not-a-uuid"}), 422)
    async with projector_held(two_instances[0]), projector_held(two_instances[1]):
        second = await call(nc, prefix, "cmd.create", {"name": "unapplied"})
        behind = {"Flows-Min-Position": str(second.position), "Flows-Wait-Ms": "0"}
        assert_error(await call(nc, prefix, "query.count", {}, behind), 503)

    stats = await gather_replies(nc, "$SRV.STATS", prefix, 2)
    by_endpoint: dict[str, list[dict[str, Any]]] = {}
    for instance in stats:
        assert instance["type"] == "io.nats.micro.v1.stats_response"
        for endpoint in instance["endpoints"]:
            by_endpoint.setdefault(endpoint["name"], []).append(endpoint)
    reads = by_endpoint["read"]
    assert sum(e["num_requests"] for e in reads) == 21  # a 422 is an answer, not an error
    assert sum(e["num_errors"] for e in reads) == 0
    assert all(e["processing_time"] >= e["average_processing_time"] >= 0 for e in reads)
    assert sum(e["processing_time"] for e in reads) > 0
    counts = by_endpoint["count"]
    assert sum(e["num_errors"] for e in counts) == 1
    [failed] = [e for e in counts if e["num_errors"]]
    assert failed["last_error"].startswith("503:the read model has applied the log up to")
    assert sum(e["num_requests"] for e in by_endpoint["create"]) == 2
