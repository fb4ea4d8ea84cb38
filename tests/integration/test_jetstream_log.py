"""The JetStream event log against a real nats-server: atomicity, guards, reads, following."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from events import jetstream
from events.jetstream import JetStreamLog, StreamSettings
from events.log import AppendMessage, StoredMessage, WrongExpectedPosition
from events.subjects import Subjects
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


async def test_a_batch_with_one_failing_guard_stores_nothing(event_log: JetStreamLog) -> None:
    s = subjects_of(event_log)
    first = await event_log.append([AppendMessage(s.event("a"), b"1", 0)])
    with pytest.raises(WrongExpectedPosition):
        await event_log.append(
            [
                AppendMessage(s.event("b"), b"2", 0),
                AppendMessage(s.name("x"), b"3", 0),
                AppendMessage(s.event("a"), b"4", 0),  # wrong: "a" is at `first`
            ]
        )
    assert await event_log.last_position() == first
    assert await event_log.last(s.event("b")) is None
    position = await event_log.append(
        [AppendMessage(s.event("b"), b"2", 0), AppendMessage(s.event("a"), b"4", first)]
    )
    assert position == first + 2


async def test_first_last_and_filtered_reads(event_log: JetStreamLog) -> None:
    s = subjects_of(event_log)
    for i in range(5):
        await event_log.append(
            [AppendMessage(s.event("a" if i % 2 else "b"), str(i).encode()),
             AppendMessage(s.name(f"n{i}"), b"marker")]
        )  # fmt: skip
    first_a = await event_log.first(s.event("a"))
    last_a = await event_log.last(s.event("a"))
    assert first_a is not None and last_a is not None
    assert (first_a.data, last_a.data) == (b"1", b"3")
    events = await event_log.read(0, 100, s.all_events)
    assert [m.data for m in events] == [b"0", b"1", b"2", b"3", b"4"]
    assert [m.position for m in events] == [1, 3, 5, 7, 9]
    assert [m.position for m in await event_log.read(3, 2, s.all_events)] == [5, 7]
    assert len(await event_log.read(0, 100)) == 10
    assert events[0].time is not None


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


async def test_follow_delivers_everything_after_a_position_then_live(
    event_log: JetStreamLog,
) -> None:
    s = subjects_of(event_log)
    for i in range(3):
        await event_log.append([AppendMessage(s.event("f"), str(i).encode())])
    seen: list[StoredMessage] = []
    done = asyncio.Event()

    async def follow() -> None:
        async for batch in event_log.follow(1):
            seen.extend(batch)
            if seen and seen[-1].position >= 5:
                done.set()

    task = asyncio.create_task(follow())
    try:
        await event_log.append([AppendMessage(s.event("f"), b"3")])
        await event_log.append([AppendMessage(s.name("z"), b"m")])
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [m.position for m in seen] == [2, 3, 4, 5]
    assert [m.data for m in seen] == [b"1", b"2", b"3", b"m"]


async def test_ensure_stream_is_idempotent_and_updates_settings(event_log: JetStreamLog) -> None:
    await event_log.ensure_stream(StreamSettings(event_log.stream, duplicate_window_s=60))
    await event_log.ensure_stream(StreamSettings(event_log.stream, duplicate_window_s=60))
    info = await event_log._api_request(f"STREAM.INFO.{event_log.stream}", b"")
    assert info is not None
    assert info["config"]["duplicate_window"] == 60_000_000_000
    assert info["config"]["allow_atomic"] is True
    assert info["config"]["storage"] == "file"
