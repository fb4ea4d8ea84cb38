"""Plain nats-py subscriptions of the request subjects (services/fast_subscriptions.py): the
queue group, at most `max_in_flight` requests at once, and a failing request logged, not fatal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.msg import Msg

from services import fast_subscriptions


class _Connection:
    """Stands in for nats-py's client: keeps the callback the subscription was given."""

    def __init__(self) -> None:
        self.subscribed: dict[str, Any] = {}
        self.cb: Callable[[Msg], Awaitable[None]] | None = None

    async def subscribe(self, subject: str, *, queue: str, cb: Any) -> str:
        self.subscribed = {"subject": subject, "queue": queue}
        self.cb = cb
        return "subscription"


def _msg(number: int) -> Msg:
    return Msg(None, subject="flows.query.read", reply=f"_INBOX.{number}", data=b"{}")  # type: ignore[arg-type]


async def _subscribe(
    serve: Callable[[Msg], Awaitable[None]], max_in_flight: int
) -> Callable[[Msg], Awaitable[None]]:
    connection = _Connection()
    subscription = await fast_subscriptions.subscribe(
        connection,  # type: ignore[arg-type]
        "flows.query.read",
        "flows",
        serve,
        max_in_flight,
    )
    assert subscription == "subscription"
    assert connection.subscribed == {"subject": "flows.query.read", "queue": "flows"}
    assert connection.cb is not None
    return connection.cb


async def test_at_most_max_in_flight_requests_run_at_once() -> None:
    release = asyncio.Event()
    two_running = asyncio.Event()
    all_done = asyncio.Event()
    running: list[int] = []
    done: list[int] = []

    async def serve(msg: Msg) -> None:
        running.append(int(msg.reply.rsplit(".", 1)[1]))
        if len(running) == 2:
            two_running.set()
        await release.wait()
        done.append(int(msg.reply.rsplit(".", 1)[1]))
        if len(done) == 3:
            all_done.set()

    deliver = await _subscribe(serve, max_in_flight=2)
    await deliver(_msg(1))
    await deliver(_msg(2))
    # nats-py awaits its callback before handing over the next message: the third delivery
    # waits for a free slot, holding the rest back.
    third = asyncio.create_task(deliver(_msg(3)))
    await two_running.wait()
    assert not third.done()
    assert running == [1, 2]

    release.set()
    await third
    await all_done.wait()
    assert running == [1, 2, 3]


async def test_a_failing_request_is_logged_and_the_next_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    served: list[str] = []
    finished = asyncio.Event()

    async def serve(msg: Msg) -> None:
        if msg.reply.endswith(".1"):
            raise RuntimeError("boom")
        served.append(msg.reply)
        finished.set()

    deliver = await _subscribe(serve, max_in_flight=1)
    with caplog.at_level(logging.ERROR, logger="services.fast_subscriptions"):
        await deliver(_msg(1))
        await deliver(_msg(2))  # the slot came back although the first request failed
        await finished.wait()
    assert served == ["_INBOX.2"]
    assert "request on flows.query.read failed without a reply" in caplog.text
