"""Where the wire suites' requests go: `flows serve`'s app on a real nats-server (`nats`, the
default, what CI runs), or the same app in-process (`memory`): FastStream's TestNatsBroker for
the transport and `events.memory_log.InMemoryLog` for the event log, no socket anywhere.

`pytest --transport=memory` (or FLOWS_TEST_TRANSPORT=memory) runs the modules marked
`pytest.mark.in_process` that way, for fast feedback; every other test keeps its real
nats-server. Within such a module, a test that asks for the `nc` fixture (a nats-py client on
the real server: stream info, raw subjects, NATS's own headers) always runs on NATS.

In-process, a request goes through FastStream's test producer to the app's real subscriber
and handler (the route table, the request handling, the reply policy), with an `_INBOX.`
reply subject of its own. Its reply comes back the way the app sends it: FastStream's
response to that inbox (caught by a subscriber of this module), or, for a query that waited for
the read model, the service's own publish on its connection (TestNatsBroker's stand-in, whose
`publish` this module answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import pytest
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage, TestNatsBroker
from faststream.nats.schemas.js_stream import is_subject_match_wildcard

from events.memory_log import InMemoryLog
from services.app import create_app
from services.settings import Settings

__all__ = [
    "IN_PROCESS",
    "MEMORY",
    "NATS",
    "TRANSPORT_ENV",
    "InProcessNats",
    "InProcessReply",
    "add_option",
    "chosen_transport",
    "running_in_process",
]

NATS = "nats"
MEMORY = "memory"
TRANSPORT_ENV = "FLOWS_TEST_TRANSPORT"
# The marker of a module whose wire tests can run in-process.
IN_PROCESS = "in_process"

_INBOX = "_INBOX.inprocess"


def add_option(parser: pytest.Parser) -> None:
    parser.addoption(
        "--transport",
        choices=(NATS, MEMORY),
        default=os.environ.get(TRANSPORT_ENV) or NATS,
        help=(
            "where the in-process-capable wire suites (pytest.mark.in_process) send requests: "
            f"a real nats-server ({NATS}, the default) or the app in-process on TestNatsBroker "
            f"and an in-memory log ({MEMORY}); also {TRANSPORT_ENV}"
        ),
    )


def chosen_transport(request: pytest.FixtureRequest) -> str:
    """This test's transport: `memory` only when asked for, in a module marked in_process, and
    for a test that does not need the real nats-server (`nc`)."""
    if request.config.getoption("--transport") != MEMORY:
        return NATS
    if request.node.get_closest_marker(IN_PROCESS) is None or "nc" in request.fixturenames:
        return NATS
    return MEMORY


@dataclass(frozen=True, slots=True)
class InProcessReply:
    """What nats-py's `request` returns, as far as the tests read it."""

    data: bytes
    headers: dict[str, str] | None


@dataclass
class InProcessNats:
    """The requester of an in-process app (`request`, as nats-py's client has it), and the
    receiver of every reply the app sends."""

    broker: NatsBroker
    event_log: InMemoryLog
    _waiting: dict[str, asyncio.Future[InProcessReply]] = field(default_factory=dict)
    _inboxes: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        # FastStream answers a request by publishing its response to the reply subject: with
        # TestNatsBroker, to a subscriber of the same broker. Registered before start-up.
        inbox = self.broker.subscriber(f"{_INBOX}.>", decoder=_raw, title="in-process replies")

        @inbox
        async def received(message: NatsMessage) -> None:
            raw = message.raw_message
            self._deliver(raw.subject, raw.data, raw.headers)

    async def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", headers: Any = None
    ) -> None:
        """The service's own publishes on its connection: the replies of queries that waited."""
        self._deliver(subject, payload, headers)

    def _deliver(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        waiting = self._waiting.pop(subject, None)
        if waiting is not None and not waiting.done():  # else, as NATS: nobody is listening
            waiting.set_result(InProcessReply(bytes(data), dict(headers or {})))

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        headers: dict[str, str] | None = None,
    ) -> InProcessReply:
        """nats-py's request: NoRespondersError when nothing subscribes to `subject`,
        nats.errors.TimeoutError when no reply comes in time."""
        if not any(
            _serves(subscriber, subject)
            for subscriber in self.broker.subscribers
            if not _serves(subscriber, _INBOX + ".x")
        ):
            raise nats.errors.NoRespondersError
        inbox = f"{_INBOX}.{next(self._inboxes)}"
        answer = self._waiting[inbox] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self.broker.publish(payload, subject, headers=headers, reply_to=inbox)
                return await answer
        except TimeoutError:
            raise nats.errors.TimeoutError from None
        finally:
            self._waiting.pop(inbox, None)


def _serves(subscriber: Any, subject: str) -> bool:
    return bool(is_subject_match_wildcard(subject, subscriber.subject.broker_address))


async def _raw(message: NatsMessage) -> NatsMessage:
    return message


@contextlib.asynccontextmanager
async def running_in_process(settings: Settings) -> AsyncIterator[InProcessNats]:
    """The service's app in-process on an empty in-memory log; started on entry, stopped on
    exit."""
    event_log = InMemoryLog()
    app: FastStream = create_app(settings, event_log=event_log)
    broker = app.broker
    assert isinstance(broker, NatsBroker)
    requester = InProcessNats(broker, event_log)
    async with TestNatsBroker(broker, connect_only=True):
        # TestNatsBroker's stand-in for the connection: the service's publishes come here.
        broker.connection.publish = requester.publish
        await app.start()
        try:
            yield requester
        finally:
            await app.stop()
