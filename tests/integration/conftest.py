"""Fixtures of the integration layer, on top of `tests/conftest.py` (nats_server, settings, nc):
the service (with a quiescing stop), a FlowsClient and a raw caller bound to the test's service."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from projections.projector import lock_checkpoint, move_checkpoint
from services.app import create_app
from services.bootstrap import create_engine
from services.client import FlowsClient
from services.settings import Settings
from tests.integration.wire import WireReply, call


@pytest.fixture(params=["sqlite", "postgresql"])
async def read_model(
    request: pytest.FixtureRequest, settings: Settings, postgres_url: str | None
) -> AsyncIterator[Settings]:
    """The same contract suite against each read-model backend: SQLite (the default), and
    PostgreSQL in a fresh database when FLOWS_TEST_POSTGRES_URL names a server (.ci/run)."""
    if request.param == "sqlite":
        yield settings
        return
    if postgres_url is None:
        pytest.skip("FLOWS_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    async with fresh_postgres_database(postgres_url, f"flows_{settings.stream.lower()}") as url:
        yield dataclasses.replace(settings, database_url=url)


@contextlib.asynccontextmanager
async def fresh_postgres_database(postgres_url: str, name: str) -> AsyncIterator[str]:
    """A new, empty database `name` on the server of `postgres_url`, dropped on exit: its URL."""
    admin = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        base, _, _ = postgres_url.rpartition("/")
        yield f"{base}/{name}"
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
async def service(read_model: Settings, nc: NatsClient) -> AsyncIterator[Settings]:
    """`tests/conftest.py`'s service, made deterministic at both ends for these tests.

    - Start: the fixture also waits, with a deadline, until the service answers (start-up
      itself is proven prompt by `test_lifecycle.py`).
    - Stop: the read model catches up with the log first, so every test ends from a quiet
      service (stopping while behind is proven by `test_lifecycle.py`).
    """
    async with running(read_model, nc):
        yield read_model


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
    info = await nc.jetstream().stream_info(settings.stream)
    await call(
        nc,
        settings.subject_prefix,
        "query.count",
        headers={"Flows-Min-Position": str(info.state.last_seq), "Flows-Wait-Ms": "10000"},
        timeout=15,
    )


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
def client(service: Settings, nc: NatsClient) -> FlowsClient:
    return FlowsClient(nc, service.subject_prefix)


@pytest.fixture
def wire(service: Settings, nc: NatsClient) -> Wire:
    async def send(
        operation: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> WireReply:
        return await call(nc, service.subject_prefix, operation, body, headers, timeout)

    return send
