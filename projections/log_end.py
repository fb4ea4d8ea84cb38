"""The event log's last position, looked up once for any number of queries that need it.

A query may ask for the read model to reach a position first (`Flows-Min-Position`). A position
beyond the log's end is one no acknowledged command handed out, and waiting for it would only
hold the requester (and, before, a handler slot) until its wait ran out: such a query is refused
at once. Knowing the end needs a round trip to the stream's leader, so it is shared the way
etcd shares its "read index": a look-up serves every caller that arrived before it was sent,
at most one is in flight, and callers arriving meanwhile share the next one. A flood of such
queries costs one look-up per round trip, not one per query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["LogEnd"]


class LogEnd:
    def __init__(self, lookup: Callable[[], Awaitable[int]]) -> None:
        self._lookup = lookup
        # The highest position known to exist: positions the log handed out or the read model
        # applied, and the last look-up's answer. The log's end never moves back.
        self._known = 0
        # The next look-up, not yet sent: every caller arriving now shares it.
        self._next: asyncio.Future[int] | None = None
        self._one_at_a_time = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def known(self) -> int:
        return self._known

    def saw(self, position: int) -> None:
        """`position` exists in the log (a command's reply, the projector's progress)."""
        self._known = max(self._known, position)

    async def fresh(self) -> int:
        """The log's end as a look-up sent after this call began reports it."""
        if self._next is None:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            # Nobody may be left to read a failure (every caller cancelled): don't report it.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._next = future
            task = asyncio.create_task(self._look_up(future), name="flows-log-end")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(self._next)

    async def _look_up(self, future: asyncio.Future[int]) -> None:
        try:
            async with self._one_at_a_time:
                if self._next is future:  # from now on, arrivals share the look-up after this
                    self._next = None
                end = await self._lookup()
        except asyncio.CancelledError:  # the service is stopping: release the callers
            if self._next is future:
                self._next = None
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            return
        self.saw(end)
        future.set_result(end)
