"""Fixtures of the integration layer, on top of `tests/conftest.py` (nats_server, settings, nc):
the service (with a quiescing stop), a FlowsClient and a raw caller bound to the test's service,
on a real nats-server or, for modules marked `in_process` under `--transport=memory`, in-process
(tests/integration/transport.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, cast

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from projections.projector import lock_checkpoint, move_checkpoint
from services.app import create_app
from services.bootstrap import create_engine
from services.client import FlowsClient
from services.settings import Settings
from tests import backends
from tests.integration import transport
from tests.integration.wire import Requester, WireReply, call


@pytest.fixture
def read_model(settings: Settings, database_url: str) -> Settings:
    """The service's settings on the test's read model: the same contract suite once per
    backend (`database_url`, tests/backends.py; `backends.only` picks one).

    SQLite stays the service's default, its own file in its data dir (which `database_url`
    names), so that a second instance started with another data dir has a model of its own, as
    a second `flows serve` would; PostgreSQL is the fresh database, named explicitly."""
    if backends.backend_of(database_url) == backends.SQLITE:
        assert database_url == settings.resolved_database_url, (database_url, settings)
        return settings
    return dataclasses.replace(settings, database_url=database_url)


@dataclasses.dataclass(frozen=True, slots=True)
class Connected:
    """How a test reaches its service: what it sends requests with (a nats-py client, or the
    in-process stand-in) and where the service's log ends."""

    requester: Requester
    log_end: Callable[[], Awaitable[int]]


@pytest.fixture
def nats_client(request: pytest.FixtureRequest) -> NatsClient | None:
    """The `nc` fixture when the test's service runs on NATS, None when it runs in-process
    (asked for here, outside the event loop, so that only NATS tests connect)."""
    if transport.chosen_transport(request) == transport.MEMORY:
        return None
    nc: NatsClient = request.getfixturevalue("nc")
    return nc


@pytest.fixture
async def connected(
    read_model: Settings, nats_client: NatsClient | None
) -> AsyncIterator[Connected]:
    """The test's service, running, and the way to reach it.

    - Start: the fixture also waits, with a deadline, until the service answers (start-up
      itself is proven prompt by `test_lifecycle.py`).
    - Stop: the read model catches up with the log first, so every test ends from a quiet
      service (stopping while behind is proven by `test_lifecycle.py`).
    """
    if nats_client is None:
        async with transport.running_in_process(read_model) as in_process:
            try:
                yield Connected(in_process, in_process.event_log.last_position)
            finally:
                await catch_up_to(in_process, read_model, in_process.event_log.last_position)
        return
    async with running(read_model, nats_client):
        yield Connected(nats_client, functools.partial(stream_end, nats_client, read_model.stream))


@pytest.fixture
def service(read_model: Settings, connected: Connected) -> Settings:
    """`tests/conftest.py`'s service, made deterministic at both ends (`connected`)."""
    return read_model


@contextlib.asynccontextmanager
async def running(settings: Settings, nc: NatsClient) -> AsyncIterator[Settings]:
    """The service in-process, answering on entry, caught up and stopped on exit."""
    app = create_app(settings)
    await app.start()
    try:
        await wait_until_answering(nc, settings.subject_prefix)
        yield settings
    finally:
        try:
            await catch_up(nc, settings)
        finally:
            await app.stop()


async def wait_until_answering(nc: NatsClient, prefix: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await call(nc, prefix, "query.count", timeout=timeout_s)
            return
        except nats.errors.NoRespondersError:
            if time.monotonic() > deadline:
                raise
            await nc.flush()  # a round trip to the server, then ask again


async def catch_up(nc: NatsClient, settings: Settings) -> None:
    """Wait until the service's read model has applied the whole log."""
    await catch_up_to(nc, settings, functools.partial(stream_end, nc, settings.stream))


async def catch_up_to(
    requester: Requester, settings: Settings, log_end: Callable[[], Awaitable[int]]
) -> None:
    await call(
        requester,
        settings.subject_prefix,
        "query.count",
        headers={"Flows-Min-Position": str(await log_end()), "Flows-Wait-Ms": "10000"},
        timeout=15,
    )


async def stream_end(nc: NatsClient, stream: str) -> int:
    """The last position of a service's stream, as JetStream reports it."""
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.last_seq)


@contextlib.asynccontextmanager
async def projector_held(settings: Settings) -> AsyncIterator[None]:
    """Hold the live projector's checkpoint lock (on SQLite, its one write lock) until exit:
    commands still append to the log, the read model stays where it is. Hold it for less than
    SQLite's busy timeout (5 s), past which the projector retries from its checkpoint."""
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            try:
                # Rewriting the checkpoint as it is takes SQLite's one write lock, and on
                # PostgreSQL the row's lock (or, before the first batch, the row's key: the
                # projector's insert of it waits for this transaction).
                await move_checkpoint(conn, await lock_checkpoint(conn))
                yield
            finally:
                await transaction.rollback()
    finally:
        await engine.dispose()


class Wire(Protocol):
    async def __call__(
        self,
        operation: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = ...,
    ) -> WireReply: ...


@pytest.fixture
def client(service: Settings, connected: Connected) -> FlowsClient:
    return FlowsClient(cast(NatsClient, connected.requester), service.subject_prefix)


@pytest.fixture
def log_end(connected: Connected) -> Callable[[], Awaitable[int]]:
    """The position of the last message in the test's service's log."""
    return connected.log_end


@pytest.fixture
def wire(service: Settings, connected: Connected) -> Wire:
    async def send(
        operation: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> WireReply:
        return await call(
            connected.requester, service.subject_prefix, operation, body, headers, timeout
        )

    return send
