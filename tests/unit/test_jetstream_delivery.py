"""The buffers a subscription's callback fills: a batched direct get's answer, and the follower's
bounded arrivals (what happens when the connection closes under them is tested against a real
server in tests/integration/test_jetstream_log.py)."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from events.jetstream_delivery import Arrivals, BatchReply, delivered, nanosecond_time
from events.log import StoredMessage


class _OpenConnection:
    is_closed = False


def _message(position: int) -> Msg:
    return Msg(cast(NatsClient, None), subject="p.x", data=str(position).encode())


def _by_data(msg: Msg) -> StoredMessage:
    return StoredMessage(subject=msg.subject, data=msg.data, position=int(msg.data))


def _arrivals(limit: int) -> Arrivals:
    return Arrivals(cast(NatsClient, _OpenConnection()), limit=limit, convert=_by_data)


async def test_arrivals_hold_at_most_their_limit_and_lose_nothing() -> None:
    arrivals = _arrivals(limit=3)

    async def deliver() -> None:
        for position in range(1, 11):
            await arrivals.add(_message(position))

    delivering = asyncio.create_task(deliver())
    taken: list[int] = []
    held: list[int] = []
    async with asyncio.timeout(5):
        while len(taken) < 10:
            # Unbounded, the first take would find all ten: the callback never had to wait.
            batch = await arrivals.take(2)
            held.append(len(arrivals._messages) + len(batch))
            taken.extend(m.position for m in batch)
        await delivering
    assert max(held) == 3
    assert taken == list(range(1, 11))


async def test_take_gives_what_has_arrived_up_to_most() -> None:
    arrivals = _arrivals(limit=10)
    for position in (1, 2, 3):
        await arrivals.add(_message(position))
    assert [m.position for m in await arrivals.take(2)] == [1, 2]
    assert [m.position for m in await arrivals.take(2)] == [3]


async def test_take_waits_for_the_first_arrival() -> None:
    arrivals = _arrivals(limit=10)
    taking = asyncio.create_task(arrivals.take(5))
    await arrivals.add(_message(7))
    async with asyncio.timeout(5):
        assert [m.position for m in await taking] == [7]


async def test_a_delivery_that_cannot_be_read_is_raised_by_take_not_by_the_callback() -> None:
    def refuse(msg: Msg) -> StoredMessage:
        raise ValueError(f"no metadata on {msg.subject}")

    arrivals = Arrivals(cast(NatsClient, _OpenConnection()), limit=10, convert=refuse)
    await arrivals.add(_message(1))  # must not raise: nats-py would drop it and go on
    with pytest.raises(ValueError, match=r"no metadata on p\.x"):
        await arrivals.take(5)


async def test_a_batch_reply_ends_with_its_status_message() -> None:
    reply = BatchReply()
    assert not reply.started.done()
    stamp = "2026-12-03T06:30:55.123456789Z"
    headers = {"Nats-Subject": "p.e.f", "Nats-Sequence": "4", "Nats-Time-Stamp": stamp}
    await reply.add(Msg(cast(NatsClient, None), data=b"x", headers=headers))
    assert reply.started.done() and not reply.ended.done()
    await reply.add(Msg(cast(NatsClient, None), headers={"Status": "204", "Description": "EOB"}))
    assert reply.ended.result() == ("204", "EOB")
    assert reply.messages == [
        StoredMessage(subject="p.e.f", data=b"x", position=4, time=nanosecond_time(stamp))
    ]
    assert reply.messages[0].time is not None and reply.messages[0].time.microsecond == 123456


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.FLOWS.c0nsumer.1.4242.17.1764745408791846269.99",
        "$JS.ACK._.acchash.FLOWS.c0nsumer.1.4242.17.1764745408791846269.99.rnd",
        "$JS.ACK.hub.acchash.FLOWS.c0nsumer.1.4242.17.1764745408791846269.99",
    ],
)
def test_a_delivery_is_read_as_nats_py_reads_its_ack_subject(reply: str) -> None:
    msg = Msg(cast(NatsClient, None), subject="p.e.f", reply=reply, data=b"x")
    assert delivered(msg) == StoredMessage(
        subject="p.e.f", data=b"x", position=4242, time=msg.metadata.timestamp
    )


@pytest.mark.parametrize("reply", ["", "_INBOX.abc", "$JS.NAK.a.b.1.2.3.4.5"])
def test_what_is_not_a_jetstream_delivery_is_refused(reply: str) -> None:
    with pytest.raises(NotJSMessageError):
        delivered(Msg(cast(NatsClient, None), subject="p.e.f", reply=reply))
