"""Which instance's projector writes a shared PostgreSQL read model, and how the others follow.

Instances sharing one PostgreSQL model could each run a projector (`apply_batch`'s checkpoint
row lock keeps that correct), but each would read and fold the whole log only to find most
batches applied already, and they would queue on that row lock. So one instance leads: the one
holding a session-level advisory lock (`pg_try_advisory_lock`) on a connection it keeps open
for nothing else. The others follow: they try the lock again every `retry_s`.

- The lock belongs to the session. When the leader's process dies (even SIGKILL) the kernel
  closes its socket, PostgreSQL ends the session and releases the lock, and a follower takes it
  at its next try: a takeover within about `retry_s`.
- Losing the lock's connection means the lock may be someone else's already, so the projector
  is cancelled the moment the connection is seen closed (asyncpg's termination callback), or
  when a probe on it (every `retry_s`) fails or stalls.
- Followers keep answering linearizable reads: their PositionWatcher follows the shared
  checkpoint. The transaction that moves the checkpoint NOTIFYs the new position
  (projections/checkpoint_notify.py), delivered on commit to every instance's lock connection,
  which LISTENs; a checkpoint read every `retry_s` (the probe) catches up on anything missed,
  e.g. across a reconnect.

Why no event is applied twice or skipped even if two projectors overlap for a moment (a batch
of the old leader still in flight when its lock connection died and a follower took over; a
leader cut off from the database that has not noticed yet): the lock elects, it does not fence.
Every batch still reads the checkpoint under its row lock (`SELECT ... FOR UPDATE`) in its own
transaction and applies only the messages past it (projector.apply_batch), so two batches
serialise on that row and the second skips what the first applied. A new leader's projector
starts from the checkpoint it reads and follows the log without gaps from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from projections.checkpoint_notify import checkpoint_channel
from projections.position_watcher import PositionWatcher
from projections.store import read_checkpoint

__all__ = ["ProjectorLeadership", "Role", "leadership_key"]

log = logging.getLogger(__name__)

Role = Literal["leader", "follower"]


def leadership_key(schema: str, stream: str) -> int:
    """The advisory lock's 64-bit key: one per read model (schema) and stream, so other users
    of the database's advisory locks (projections/store.py's schema lock) never collide."""
    digest = hashlib.sha256(f"flows-projector\0{schema}\0{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _ConnectionLost(Exception):
    pass


class ProjectorLeadership:
    """Run `lead` (the projector) only while this instance holds the lock; follow otherwise."""

    def __init__(
        self,
        engine: AsyncEngine,
        stream: str,
        watcher: PositionWatcher,
        lead: Callable[[], Coroutine[Any, Any, None]],
        *,
        retry_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._stream = stream
        self._watcher = watcher
        self._lead = lead
        self._retry_s = retry_s
        # A probe slower than this is a connection to give up on (and with it, the lock).
        self._probe_timeout_s = max(5.0, 3 * retry_s)
        self._projector: asyncio.Task[None] | None = None
        self._followed = False  # seen another instance lead: taking the lock is a takeover
        self._following = False  # said so in the log, this session
        self._connected = False
        self.role: Role = "follower"

    async def run(self) -> None:
        """Lead or follow until cancelled, opening the lock connection again when it is lost."""
        delay = self._retry_s
        while True:
            self._connected = False
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._connected:  # it had worked: the first retry comes soon
                    delay = self._retry_s
                log.warning(
                    "projector leadership connection to the read model failed (stream %s): %s; "
                    "connecting again in %.1fs",
                    self._stream,
                    exc or type(exc).__name__,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _session(self) -> None:
        async with self._engine.connect() as conn:
            # Autocommit: notifications are delivered only between transactions, and the lock
            # is the session's, so no transaction is ever left open on this connection.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            lost = asyncio.Event()
            closing = False

            def terminated(_connection: Any) -> None:
                if not closing:
                    lost.set()
                    self._stop_at_once()

            try:
                driver: Any = (await conn.get_raw_connection()).driver_connection
                driver.add_termination_listener(terminated)
                schema = str((await conn.execute(select(func.current_schema()))).scalar_one())
                key = leadership_key(schema, self._stream)
                await driver.add_listener(await checkpoint_channel(conn), self._heard)
                self._connected, self._following = True, False
                await self._hold_or_follow(conn, key, lost)
            finally:
                closing = True
                await self._stop_projecting()
                # Never back into the pool: the session may hold the lock. Closing it releases
                # the lock, after the projector has stopped (above).
                await conn.invalidate()

    async def _hold_or_follow(self, conn: AsyncConnection, key: int, lost: asyncio.Event) -> None:
        while True:
            if self._projector is None:
                taken = await self._probe(conn, select(func.pg_try_advisory_lock(key)))
                if taken:
                    self._take_over()
                elif not self._following:
                    self._followed = self._following = True
                    log.info(
                        "following the projector of another instance (stream %s): answering "
                        "queries from the shared read model; trying to take over every %.1fs",
                        self._stream,
                        self._retry_s,
                    )
            elif self._projector.done():
                raise RuntimeError("the projector ended by itself; giving up the leadership")
            # The probe of the connection, and the fallback for missed notifications.
            self._watcher.advance(await self._probe(conn, None))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._retry_s):
                    await lost.wait()
            if lost.is_set():
                raise _ConnectionLost("the connection was closed")

    async def _probe(self, conn: AsyncConnection, statement: Any) -> Any:
        async with asyncio.timeout(self._probe_timeout_s):
            if statement is None:
                return await read_checkpoint(conn)
            return (await conn.execute(statement)).scalar_one()

    def _take_over(self) -> None:
        self.role = "leader"
        if self._followed:
            log.warning(
                "projector leadership taken (stream %s): taking over from the instance that led "
                "before (it stopped, died or lost its database connection) at log position %d",
                self._stream,
                self._watcher.position,
            )
        else:
            log.info(
                "projector leadership taken (stream %s): this instance writes the shared read "
                "model",
                self._stream,
            )
        self._projector = asyncio.create_task(self._lead(), name="flows-projector")

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._watcher.advance(int(payload))

    def _stop_at_once(self) -> None:
        """The lock's connection is gone: stop writing before another instance takes over."""
        if self._projector is not None and not self._projector.done():
            log.error(
                "lost the database connection holding the projector leadership (stream %s): "
                "stopped projecting; another instance takes over",
                self._stream,
            )
            self._projector.cancel()
        self.role = "follower"

    async def _stop_projecting(self) -> None:
        task, self._projector = self._projector, None
        self.role = "follower"
        if task is None:
            return
        # One cancellation, awaited (see Service.stop in services/bootstrap.py): the projector
        # rolls back its batch.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
