"""Taking the live read model's write lock at the start of a writing transaction, fairly.

On SQLite the database has one write lock, and two things about it matter here.

Atomicity. Python's sqlite3 module (legacy transaction control, which SQLAlchemy's pysqlite
and aiosqlite dialects keep) issues its implicit `BEGIN` only before the first
INSERT/UPDATE/DELETE: a SELECT before that runs in autocommit, outside the transaction and
unlocked. So "read the checkpoint, then write" was not atomic: a projector batch could read the
checkpoint, wait for the lock while a rebuild's swap committed a later checkpoint, then write
its (already applied) batch into the swapped-in tables and move the checkpoint backwards.
`BEGIN IMMEDIATE` takes the write lock before the first statement instead.

Fairness. SQLite has no queue for its lock: a writer that finds it taken sleeps and polls
(up to 100 ms apart, for at most the busy timeout), so a writer that commits and begins again
at once (an online rebuild's build transactions) can win the lock again and again while the
live projector polls, and queries waiting for a position answer 503 after 5 s. So every writer
of a file database passes a turnstile on its way to the lock: an exclusive `flock` on a file
beside the database (`flows.db-turnstile`), held only while waiting for the write lock and
released as soon as it is held. A writer that is waiting holds the turnstile, so the writer
that holds the lock cannot take it again after its commit until the waiter has had its turn:
the two alternate, whichever process each is in. A file lock, not an in-process one, because
`flows rebuild` runs in its own process beside `flows serve` and shares only the database
file; a file lock is released by the kernel when its process dies, so a killed writer never
blocks the rest. Nobody waits for the turnstile while holding the write lock, so the two
cannot deadlock. (Building the new model in a separate file would avoid the contention too,
but the swap would then copy the whole model into the live file while holding the lock: a
stop of the live projector that grows with the model instead of with the final tail.)

On PostgreSQL nothing is needed here: the checkpoint row lock (`SELECT ... FOR UPDATE`)
serialises the writers of the live model, its lock queue is fair, and a rebuild's build
transactions write other tables, so they do not contend with the projector at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from collections.abc import AsyncIterator

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["take_write_lock", "turnstile_path"]

TURNSTILE_SUFFIX = "-turnstile"


async def take_write_lock(conn: AsyncConnection) -> None:
    """Make the caller's transaction hold SQLite's write lock from here to its end (SQLite
    only: projections/dialect.py calls it for SQLite models).

    Call it first in an `engine.begin()` block. A transaction the sqlite3 module has already
    begun (it has written) holds the lock already. Waits at most the connection's busy timeout
    once through the turnstile.
    """
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is not None and driver.in_transaction:
        return
    path = turnstile_path(conn.engine.url)
    if path is None:  # an in-memory database: one process, nobody to be fair to
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    async with _turnstile(path):
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


def turnstile_path(url: URL) -> str | None:
    """The turnstile file of a SQLite file database; None for an in-memory one (or a `file:`
    URI, which this service never configures)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + TURNSTILE_SUFFIX


@contextlib.asynccontextmanager
async def _turnstile(path: str) -> AsyncIterator[None]:
    """Hold the exclusive lock on `path` for the block; closing the file releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the usual case: nobody waiting
    except BlockingIOError:
        await _Waiter(fd).wait()  # closes the file itself if we are cancelled meanwhile
    except BaseException:
        os.close(fd)
        raise
    try:
        yield
    finally:
        os.close(fd)


class _Waiter:
    """A blocking `flock` in a daemon thread, awaitable and cancellable.

    A thread blocked in flock cannot be interrupted; if the awaiting task is cancelled, the
    thread closes the file once it gets the lock, which releases it at once. A daemon thread
    (not the loop's executor) so a shutdown never waits for it. The wait is short: whoever
    holds the turnstile holds it only while waiting for SQLite's lock (busy timeout, 5 s).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._mutex = threading.Lock()
        self._abandoned = False
        self._finished = False  # the thread is done with the file (locked it, or failed)
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()

    async def wait(self) -> None:
        threading.Thread(target=self._block, name="sqlite-turnstile", daemon=True).start()
        try:
            await asyncio.shield(self._done)
        except BaseException:
            with self._mutex:
                self._abandoned = True
                if self._finished:  # else the thread closes it when flock returns
                    os.close(self._fd)
            raise

    def _block(self) -> None:
        error: OSError | None = None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            error = exc
        with self._mutex:
            if self._abandoned:
                os.close(self._fd)
                return
            self._finished = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self._loop.call_soon_threadsafe(self._settle, error)

    def _settle(self, error: OSError | None) -> None:
        if self._done.done() or self._abandoned:
            return
        if error is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(error)
