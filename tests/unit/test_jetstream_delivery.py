"""The buffers a subscription's callback fills: a batched direct get's answer, and the follower's
bounded arrivals (what happens when the connection closes under them is tested against a real
server in tests/integration/test_jetstream_log.py)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
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


async def test_arrivals_that_overflow_give_what_they_held_then_an_empty_batch() -> None:
    arrivals = _arrivals(limit=3)
    for position in range(1, 6):
        await arrivals.add(_message(position))  # never waits: 4 and 5 are refused
    assert [m.position for m in await arrivals.take(2)] == [1, 2]
    await arrivals.add(_message(6))  # room again, but the deliveries have a gap now
    assert [m.position for m in await arrivals.take(2)] == [3]
    async with asyncio.timeout(5):
        assert await arrivals.take(2) == []


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
        "$JS.ACK.FLOWS.c0nsumer.1.4242.17.1764745408791846999.99",
        "$JS.ACK._.acchash.FLOWS.c0nsumer.1.4242.17.1764745408791846999.99.rnd",
        "$JS.ACK.hub.acchash.FLOWS.c0nsumer.1.4242.17.1764745408791846999.99",
    ],
)
def test_a_delivery_is_read_from_its_ack_subject_as_nats_py_reads_it(reply: str) -> None:
    msg = Msg(cast(NatsClient, None), subject="p.e.f", reply=reply, data=b"x")
    message = delivered(msg)
    assert message.position == msg.metadata.sequence.stream == 4242
    assert (message.subject, message.data) == ("p.e.f", b"x")
    # Truncated to the microsecond, as a direct get's time is, where nats-py rounds a float.
    assert message.time == nanosecond_time("2025-12-03T07:03:28.791846999Z")
    assert message.time is not None
    assert abs((message.time - msg.metadata.timestamp).total_seconds()) <= 1e-6


@pytest.mark.parametrize(
    "reply", ["", "_INBOX.abc", "$JS.NAK.a.b.1.2.3.4.5", "$JS.ACK.a.b.1.2.3.4.5.6"]
)
def test_what_is_not_a_jetstream_delivery_is_refused(reply: str) -> None:
    with pytest.raises(NotJSMessageError):
        delivered(Msg(cast(NatsClient, None), subject="p.e.f", reply=reply))


def _time_by_hand(stamp: str) -> datetime:
    """The reading `nanosecond_time` had before it used fromisoformat: the fraction cut to six
    digits, then parsed."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    text = f"{head}.{(frac + '000000')[:6]}+00:00" if frac else f"{head}+00:00"
    return datetime.fromisoformat(text)


def test_a_stamp_reads_as_its_microseconds_truncated_whatever_its_fraction() -> None:
    pick = random.Random(7)
    stamps = ["2026-12-03T09:25:43.9999999Z", "2026-12-03T09:25:43Z", "2026-12-31T23:59:59.1Z"]
    for _ in range(20_000):
        digits = "".join(pick.choices("0123456789", k=pick.randrange(10)))
        stamps.append(
            f"{pick.randrange(1970, 2400)}-{pick.randrange(1, 13):02d}-{pick.randrange(1, 29):02d}"
            f"T{pick.randrange(24):02d}:{pick.randrange(60):02d}:{pick.randrange(60):02d}"
            + (f".{digits}" if digits else "")
            + "Z"
        )
    for stamp in stamps:
        read = nanosecond_time(stamp)
        assert read == _time_by_hand(stamp), stamp
        assert read is not None and read.tzinfo is UTC, stamp
