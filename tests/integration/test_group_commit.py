"""Group commit on a real nats-server: concurrent appends share atomic batches, each append
still gets its own position and its own guard outcome."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from nats.aio.client import Client as NatsClient

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, StreamSettings
from events.log import AppendMessage, WrongExpectedPosition


@pytest.fixture
async def event_log(nc: NatsClient) -> JetStreamLog:
    tag = uuid.uuid4().hex[:8]
    log = JetStreamLog(nc, Subjects(f"g{tag}"), f"G{tag}", timeout_s=5)
    await log.ensure_stream(StreamSettings(f"G{tag}"))
    return log


async def test_concurrent_appends_each_get_the_position_of_their_own_last_message(
    event_log: JetStreamLog,
) -> None:
    s = event_log._subjects
    appends = [
        [AppendMessage(s.event(f"f{i}"), f"event {i}".encode(), 0),
         AppendMessage(s.name(f"n{i}"), f"marker {i}".encode(), 0)]
        for i in range(60)
    ]  # fmt: skip
    sends: list[int] = []
    send = event_log._group._send

    async def counted(messages: Sequence[AppendMessage]) -> int:
        sends.append(len(messages))
        return await send(messages)

    event_log._group._send = counted
    positions = await asyncio.gather(*(event_log.append(a) for a in appends))
    assert sum(sends) == 120 and len(sends) < 60  # grouped: fewer commits than appends
    assert len(set(positions)) == 60
    assert await event_log.last_position() == 120
    for i, position in enumerate(positions):
        marker = await event_log.last(s.name(f"n{i}"))
        event = await event_log.last(s.event(f"f{i}"))
        assert marker is not None and event is not None
        assert (marker.position, marker.data) == (position, f"marker {i}".encode())
        # Each append's messages stay together, in order.
        assert event.position == position - 1


async def test_a_lost_race_fails_only_its_own_append(event_log: JetStreamLog) -> None:
    s = event_log._subjects
    taken = await event_log.append([AppendMessage(s.event("taken"), b"first", 0)])
    appends = [[AppendMessage(s.event(f"f{i}"), b"x", 0)] for i in range(40)]
    appends[17] = [AppendMessage(s.event("taken"), b"second", 0)]  # guard: subject empty: wrong
    appends[29] = [
        AppendMessage(s.event("taken2"), b"a", 0),
        AppendMessage(s.event("taken"), b"b", 0),
    ]
    outcomes = await asyncio.gather(*(event_log.append(a) for a in appends), return_exceptions=True)
    failed = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, BaseException)]
    assert failed == [17, 29]
    assert all(isinstance(outcomes[i], WrongExpectedPosition) for i in failed)
    # Nothing of the failed appends was stored, everything else was, once.
    assert await event_log.last(s.event("taken2")) is None
    latest = await event_log.last(s.event("taken"))
    assert latest is not None and (latest.position, latest.data) == (taken, b"first")
    assert await event_log.last_position() == taken + 38
