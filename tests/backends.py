"""The read-model backends the tests run against, in one place: SQLite and PostgreSQL.

Every test that needs a read model gets it from here, through the fixtures of
`tests/conftest.py`:

- `database_url`: parametrised over both backends (ids `sqlite`, `postgresql`), a fresh,
  empty database per test, removed afterwards: a new SQLite file in the test's directory, or
  a new PostgreSQL database on the server named by FLOWS_TEST_POSTGRES_URL. The integration
  layer's `read_model` (a service's settings) is built on it.
- `only("sqlite")` / `only("postgresql")`: a test about one backend asks for that one, still
  through `database_url`.
- `postgres_url`: the PostgreSQL server itself, for tests that make databases of their own
  (several per test, or one a service must wait for).

PostgreSQL is never skipped: without FLOWS_TEST_POSTGRES_URL its tests fail, saying so (`.ci/run`
sets it). They all carry the `postgres` marker, so a machine without a server runs the rest
with `pytest -m "not postgres"`: deselected on purpose by whoever runs them, not skipped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _pytest.mark.structures import MarkDecorator, ParameterSet
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

__all__ = [
    "BACKENDS",
    "POSTGRESQL",
    "POSTGRES_ENV",
    "SQLITE",
    "backend_of",
    "fresh_database_url",
    "fresh_postgres_database",
    "fresh_postgres_schema",
    "only",
    "postgres_server_url",
    "sqlite_url",
]

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
POSTGRES_ENV = "FLOWS_TEST_POSTGRES_URL"


def _param(backend: str) -> ParameterSet:
    marks = [pytest.mark.postgres] if backend == POSTGRESQL else []
    return pytest.param(backend, id=backend, marks=marks)


# The parameters of every fixture that runs a test once per backend.
BACKENDS = [_param(SQLITE), _param(POSTGRESQL)]


def only(backend: str, fixture: str = "database_url") -> MarkDecorator:
    """A test (or class, or module through `pytestmark`) about one backend only."""
    return pytest.mark.parametrize(fixture, [_param(backend)], indirect=True)


def postgres_server_url() -> str:
    """The PostgreSQL server's URL (FLOWS_TEST_POSTGRES_URL); fails the test when unset."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.fail(
            f"{POSTGRES_ENV} is not set: PostgreSQL tests need a server, e.g. "
            f"{POSTGRES_ENV}=postgresql+asyncpg://postgres@127.0.0.1:5432/test (.ci/run sets "
            'it). Without one, deselect them on purpose: pytest -m "not postgres".',
            pytrace=False,
        )
    return url


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path.resolve()}"


def backend_of(url: str) -> str:
    return POSTGRESQL if make_url(url).get_backend_name() == POSTGRESQL else SQLITE


@contextlib.asynccontextmanager
async def fresh_postgres_database(server_url: str, name: str | None = None) -> AsyncIterator[str]:
    """A new, empty database on the server of `server_url`, dropped (connections and all) on
    exit: its URL."""
    name = name or f"flows_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@contextlib.asynccontextmanager
async def fresh_postgres_schema(server_url: str) -> AsyncIterator[str]:
    """A new, empty schema in the server's database, dropped on exit: its name. Cheaper than a
    database, for many small read models (connect with `search_path` set to it)."""
    schema = f"flows_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server_url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield schema
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


@contextlib.asynccontextmanager
async def fresh_database_url(backend: str, directory: Path) -> AsyncIterator[str]:
    """A fresh, empty database of `backend`: a new SQLite file in `directory` (a test's own),
    or a new PostgreSQL database, dropped on exit."""
    if backend == SQLITE:
        # The test's own directory is fresh; pytest removes it (keeping the last few runs').
        yield sqlite_url(directory / "flows.db")
        return
    async with fresh_postgres_database(postgres_server_url()) as url:
        yield url
