"""One client's waits cannot starve another client's reads (real nats-server, SQLite model).

- A `Flows-Min-Position` beyond the log's end (a position no command handed out) is refused at
  once: 300 such reads asking to wait a minute each, all in flight together, get their 422s
  and an honest read sent meanwhile is answered as usual.
- A query that must wait for the projector holds no handler slot: with 4 slots per subject and
  50 reads waiting on `query.read`, another read on `query.read` is answered at once.
- How many queries may wait at once is bounded (`FLOWS_MAX_WAITING`); past it, 503 at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from services.settings import Settings
from tests.integration.conftest import projector_held, running
from tests.integration.wire import WireReply, assert_error, assert_success, call

# An answer that did not wait behind anything comes well within this.
PROMPT_S = 2.0


@pytest.fixture
async def narrow(settings: Settings, nc: NatsClient) -> AsyncIterator[Settings]:
    """A service with few handler slots and a small waiting bound, so that a handful of
    requests would exhaust either if waits held slots."""
    chosen = dataclasses.replace(settings, max_in_flight=4, max_waiting=60)
    async with running(chosen, nc):
        yield chosen


async def test_impossible_waits_are_refused_at_once_and_starve_nobody(
    narrow: Settings, nc: NatsClient
) -> None:
    prefix = narrow.subject_prefix
    created = await call(nc, prefix, "cmd.create", {"name": "honest"})
    assert_success(created, 201)
    hostile_headers = {"Flows-Min-Position": "1000000000000", "Flows-Wait-Ms": "60000"}
    hostile = [
        asyncio.create_task(
            call(nc, prefix, "query.read", {"id": created.json["id"]}, hostile_headers, 30)
        )
        for _ in range(300)
    ]
    started = time.monotonic()
    honest = await call(nc, prefix, "query.read", {"id": created.json["id"]}, timeout=30)
    honest_took = time.monotonic() - started
    refused = await asyncio.gather(*hostile)
    assert_success(honest, 200)
    assert honest.json == created.json
    assert honest_took < PROMPT_S, honest_took
    for reply in refused:
        assert_error(reply, 422)
        assert reply.json["exception_detail"][0]["loc"] == ["header", "Flows-Min-Position"]
    assert time.monotonic() - started < PROMPT_S * 5  # none of them waited its minute


async def test_waiting_queries_hold_no_handler_slot(narrow: Settings, nc: NatsClient) -> None:
    prefix = narrow.subject_prefix
    first = await call(nc, prefix, "cmd.create", {"name": "first"})
    assert_success(first, 201)
    async with projector_held(narrow):
        second = await call(nc, prefix, "cmd.create", {"name": "second"})
        assert_success(second, 201)
        wait_for_second = {"Flows-Min-Position": str(second.position), "Flows-Wait-Ms": "10000"}
        waiting = [
            asyncio.create_task(
                call(nc, prefix, "query.read", {"id": second.json["id"]}, wait_for_second, 20)
            )
            for _ in range(50)
        ]
        # 50 waiting reads on query.read, 4 handler slots on it: a read that needs no wait
        # (as of the first create's position, answered from the log) still gets in at once.
        started = time.monotonic()
        as_of = await call(
            nc,
            prefix,
            "query.read",
            {"id": first.json["id"]},
            {"Flows-As-Of": str(first.position)},
            timeout=10,
        )
        assert time.monotonic() - started < PROMPT_S
        assert_success(as_of, 200)
        assert as_of.json == first.json
        done, _ = await asyncio.wait(waiting, timeout=0.2)
        assert not done, "a read answered before the projector could apply its position"
    answers: list[WireReply] = await asyncio.gather(*waiting)
    for reply in answers:
        assert_success(reply, 200)
        assert reply.json == second.json


async def test_past_the_waiting_bound_a_query_is_answered_503_at_once(
    narrow: Settings, nc: NatsClient
) -> None:
    prefix = narrow.subject_prefix
    async with projector_held(narrow):
        created = await call(nc, prefix, "cmd.create", {"name": "bounded"})
        headers = {"Flows-Min-Position": str(created.position), "Flows-Wait-Ms": "10000"}
        waiting = [
            asyncio.create_task(call(nc, prefix, "query.count", {}, headers, 20))
            for _ in range(narrow.max_waiting + 10)
        ]
        deadline = time.monotonic() + PROMPT_S
        while sum(task.done() for task in waiting) < 10:
            assert time.monotonic() < deadline, "the queries past the bound were not answered"
            await asyncio.sleep(0.01)
        turned_away = [task.result() for task in waiting if task.done()]
    assert len(turned_away) == 10
    for reply in turned_away:
        assert_error(reply, 503)
        assert "FLOWS_MAX_WAITING" in reply.json["detail"]
    for reply in await asyncio.gather(*waiting):
        assert reply.status in (200, 503)
    assert sum(reply.status == 200 for reply in await asyncio.gather(*waiting)) == narrow.max_waiting
