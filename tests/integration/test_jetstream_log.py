"""What only the JetStream event log does, against a real nats-server: it waits out the server's
limit on open atomic batches, and it creates and updates its stream. What every log does
(appends, guards, reads, pages, following) is in test_event_log_contract.py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from events import jetstream_log as jetstream
from events.contract.errors import LogUnavailable
from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, StreamSettings
from events.log import AppendMessage, StoredMessage
from services.embedded import EmbeddedNats


@pytest.fixture
async def event_log(nc: NatsClient) -> JetStreamLog:
    tag = uuid.uuid4().hex[:8]
    log = JetStreamLog(nc, Subjects(f"l{tag}"), f"L{tag}", timeout_s=5)
    await log.ensure_stream(StreamSettings(f"L{tag}"))
    return log


@pytest.fixture
async def second_connection(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


def subjects_of(log: JetStreamLog) -> Subjects:
    return log._subjects


async def test_an_append_waits_while_the_server_has_too_many_batches_open(
    event_log: JetStreamLog, second_connection: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-server keeps at most 50 atomic batches open per stream (other service instances
    count too); past that an append waits its turn instead of failing."""
    refused = asyncio.Event()
    original = jetstream._position_from_ack

    def counting(reply: Msg, stream: str) -> int:
        try:
            return original(reply, stream)
        except jetstream._TooManyBatches:
            refused.set()
            raise

    monkeypatch.setattr(jetstream, "_position_from_ack", counting)
    s = subjects_of(event_log)
    # Another client opens 50 batches and holds them open.
    held = [uuid.uuid4().hex for _ in range(50)]
    for number, batch_id in enumerate(held):
        started = await second_connection.request(
            s.event(f"held{number}"),
            b"h",
            timeout=5,
            headers={"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": "1"},
        )
        assert started.data == b""  # accepted, open
    append = asyncio.create_task(
        event_log.append(
            [AppendMessage(s.event("mine"), b"e", 0), AppendMessage(s.name("m"), b"m", 0)]
        )
    )
    # The server must refuse it first, or this test did not reach the limit it is about.
    await asyncio.wait_for(refused.wait(), 5)
    assert not append.done()
    for number, batch_id in enumerate(held):  # the other client commits its batches
        await second_connection.request(
            s.event(f"held{number}x"),
            b"c",
            timeout=5,
            headers={
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": "2",
                "Nats-Batch-Commit": "1",
            },
        )
    position = await asyncio.wait_for(append, 10)
    mine = await event_log.last(s.name("m"))
    assert mine is not None and mine.position == position


async def test_ensure_stream_is_idempotent_and_updates_settings(event_log: JetStreamLog) -> None:
    await event_log.ensure_stream(StreamSettings(event_log.stream, duplicate_window_s=60))
    await event_log.ensure_stream(StreamSettings(event_log.stream, duplicate_window_s=60))
    info = await event_log._api_request(f"STREAM.INFO.{event_log.stream}", b"")
    assert info is not None
    assert info["config"]["duplicate_window"] == 60_000_000_000
    assert info["config"]["allow_atomic"] is True
    assert info["config"]["storage"] == "file"


async def test_a_follower_whose_connection_closes_says_the_log_is_unavailable(
    second_connection: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed connection stops the subscription's callback without telling it; a follower
    already waiting for messages must notice rather than wait for ever."""
    waiting = asyncio.Event()

    class WatchedArrivals(jetstream.Arrivals):
        async def take(self, most: int) -> list[StoredMessage]:
            if not self._messages:
                waiting.set()  # take goes straight to waiting: nothing to await before it
            return await super().take(most)

    monkeypatch.setattr(jetstream, "Arrivals", WatchedArrivals)
    tag = uuid.uuid4().hex[:8]
    log = JetStreamLog(second_connection, Subjects(f"c{tag}"), f"C{tag}", timeout_s=5)
    await log.ensure_stream(StreamSettings(f"C{tag}"))
    await log.append([AppendMessage(log._subjects.event("f"), b"1")])
    follower = log.follow(0)
    async with contextlib.aclosing(follower):
        first = await asyncio.wait_for(anext(follower), 10)
        assert [m.position for m in first] == [1]
        waiting.clear()
        next_batch = asyncio.ensure_future(anext(follower))
        await asyncio.wait_for(waiting.wait(), 10)
        await second_connection.close()
        with pytest.raises(LogUnavailable, match="stopped delivering while following"):
            await asyncio.wait_for(next_batch, 10)


async def test_a_follower_outrun_by_a_burst_reads_pages_and_loses_nothing(
    event_log: JetStreamLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst overflows the live consumer's few batches: the follower goes back to pages from
    what it took, then live again; every message arrives once, in order."""
    paged_from: list[int] = []
    pages = event_log.pages

    def counted(after: int, *args: Any, **kwargs: Any) -> AsyncGenerator[list[StoredMessage]]:
        paged_from.append(after)
        return pages(after, *args, **kwargs)

    live = asyncio.Event()

    class WatchedArrivals(jetstream.Arrivals):
        async def take(self, most: int) -> list[StoredMessage]:
            if not self._messages:
                live.set()  # following live, waiting for deliveries
            return await super().take(most)

    monkeypatch.setattr(event_log, "pages", counted)
    monkeypatch.setattr(jetstream, "Arrivals", WatchedArrivals)
    s = subjects_of(event_log)
    follower = event_log.follow(0, max_batch=2)  # holds at most 8 arrivals
    async with contextlib.aclosing(follower):
        first = asyncio.ensure_future(anext(follower))
        await asyncio.wait_for(live.wait(), 10)
        for start in range(0, 300, 100):
            await event_log.append(
                [
                    AppendMessage(s.event(f"f{n}"), str(n).encode())
                    for n in range(start, start + 100)
                ]
            )
        seen = [m.position for m in await asyncio.wait_for(first, 10)]
        while len(seen) < 300:
            batch = await asyncio.wait_for(anext(follower), 10)
            assert len(batch) <= 2
            seen.extend(m.position for m in batch)
    assert seen == list(range(1, 301))
    assert paged_from[0] == 0 and len(paged_from) > 1  # it went back to pages


async def test_a_follower_cancelled_while_its_consumer_is_made_stops(
    event_log: JetStreamLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's asyncio.wait_for, which nats-py's requests use, can lose a cancellation
    that meets its answer (CPython gh-86296): making the consumer must not be where a
    stopping follower gets stuck. The stand-in here loses every cancellation."""
    entered, release, made = asyncio.Event(), asyncio.Event(), asyncio.Event()
    subscribe = JetStreamContext.subscribe

    async def losing_cancellations(self: JetStreamContext, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        subscription = await subscribe(self, *args, **kwargs)
        made.set()
        return subscription

    monkeypatch.setattr(JetStreamContext, "subscribe", losing_cancellations)
    subscriptions = len(event_log._nc._subs)
    follower = event_log.follow(0)
    first = asyncio.ensure_future(anext(follower))
    await asyncio.wait_for(entered.wait(), 10)
    first.cancel()
    done, _ = await asyncio.wait({first}, timeout=10)
    assert first in done and first.cancelled()
    release.set()  # the consumer is made after all, and must be unsubscribed at once
    await asyncio.wait_for(made.wait(), 10)
    deadline = asyncio.get_running_loop().time() + 10
    while event_log._background or len(event_log._nc._subs) > subscriptions:
        assert asyncio.get_running_loop().time() < deadline, "the late consumer was kept"
        await asyncio.sleep(0.01)  # polling the connection's own bookkeeping
