"""Raw subscriptions on a real nats-server (events/raw_delivery.py): what they deliver, when they
stop, and that a log read through them gives what nats-py's subscriptions give."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, StreamSettings
from events.log import AppendMessage
from events.raw_delivery import RawSubscriptions
from services.embedded import EmbeddedNats


@pytest.fixture
async def raw_client(nats_server: EmbeddedNats) -> AsyncIterator[RawSubscriptions]:
    client = RawSubscriptions()
    await client.connect(servers=[nats_server.url])
    try:
        yield client
    finally:
        await client.close()


async def test_a_raw_handler_gets_subject_reply_payload_and_header_block(
    raw_client: RawSubscriptions, nc: NatsClient
) -> None:
    got: list[tuple[bytes, bytes, bytes, bytes]] = []
    arrived = asyncio.Event()

    def handler(subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        got.append((subject, reply, data, headers))
        if len(got) == 2:
            arrived.set()

    subscription = await raw_client.subscribe_raw("raw.test", handler)
    await raw_client.flush()
    await nc.publish("raw.test", b"plain", reply="answer.here")
    await nc.publish("raw.test", b"with", headers={"X-Kind": "h"})
    await asyncio.wait_for(arrived.wait(), 5)
    assert got[0] == (b"raw.test", b"answer.here", b"plain", b"")
    subject, reply, data, headers = got[1]
    assert (subject, reply, data) == (b"raw.test", b"", b"with")
    assert headers.startswith(b"NATS/1.0\r\n") and b"\r\nX-Kind: h\r\n" in headers

    await subscription.unsubscribe()
    assert raw_client._raw_handlers == {}  # nothing left to call


async def test_a_log_read_through_raw_subscriptions_equals_one_through_nats_py(
    raw_client: RawSubscriptions, nc: NatsClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    subjects = Subjects(f"r{tag}")
    plain = JetStreamLog(nc, subjects, f"R{tag}", timeout_s=5)
    await plain.ensure_stream(StreamSettings(f"R{tag}"))
    for number in range(30):
        await plain.append(
            [
                AppendMessage(subjects.event(f"f{number % 4}"), f'{{"n": {number}}}'.encode()),
                AppendMessage(subjects.name(f"n{number}"), b"marker"),
            ]
        )
    raw = JetStreamLog(raw_client, subjects, f"R{tag}", timeout_s=5)
    for subject_filter in (None, subjects.all_events, subjects.event("f1")):
        through_raw = [m async for page in raw.pages(0, 55, 7, subject_filter) for m in page]
        through_plain = [m async for page in plain.pages(0, 55, 7, subject_filter) for m in page]
        assert through_raw == through_plain
        assert through_raw and all(message.time is not None for message in through_raw)
