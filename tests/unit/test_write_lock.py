"""The SQLite write lock's turnstile: a waiting writer goes before the holder's next
transaction, and a cancelled waiter leaves the turnstile free."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from projections.store import configure_engine, create_schema
from projections.write_lock import _turnstile, take_write_lock, turnstile_path


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on one file, as `flows serve` and `flows rebuild` have."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'read.db'}"
    pair = create_async_engine(url), create_async_engine(url)
    for engine in pair:
        configure_engine(engine)
    await create_schema(pair[0])
    yield pair
    for engine in pair:
        await engine.dispose()


def turnstile_taken(path: str) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)  # polling an observable condition, not a guess at timing


async def test_a_waiting_writer_gets_the_lock_before_the_holders_next_transaction(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    rebuild, projector = engines
    path = turnstile_path(rebuild.url)
    assert path is not None
    order: list[str] = []

    async def batch(engine: AsyncEngine, name: str, release: asyncio.Event) -> None:
        async with engine.begin() as conn:
            await take_write_lock(conn)
            order.append(name)
            await release.wait()

    first, go = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(batch(rebuild, "rebuild 1", first))
    await until(lambda: order == ["rebuild 1"], "the first transaction")
    waiter = asyncio.create_task(batch(projector, "projector", go))
    # The projector is in the turnstile, waiting for SQLite's lock.
    await until(lambda: turnstile_taken(path), "the projector in the turnstile")
    first.set()
    await holder
    # The rebuild's next transaction, at once after its commit, comes after the projector's.
    follower = asyncio.create_task(batch(rebuild, "rebuild 2", asyncio.Event()))
    await until(lambda: len(order) == 2, "the next writer")
    assert order == ["rebuild 1", "projector"]
    go.set()
    await waiter
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower


async def test_a_cancelled_waiter_leaves_the_turnstile_free(tmp_path: Path) -> None:
    path = str(tmp_path / "read.db-turnstile")
    held = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    entered = asyncio.Event()

    async def pass_through() -> None:
        async with _turnstile(path):
            entered.set()

    waiter = asyncio.create_task(pass_through())
    await until(lambda: waiter.done() or threads_waiting(), "the waiter's thread")
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert not entered.is_set()
    os.close(held)  # the abandoned thread now takes the lock, and lets go of it at once
    await asyncio.wait_for(pass_through(), 10)
    assert entered.is_set()


def threads_waiting() -> bool:
    return any(thread.name == "sqlite-turnstile" for thread in threading.enumerate())
