"""The event log's last position, looked up once for any number of queries that need it.

A query may ask for the read model to reach a position first (`Flows-Min-Position`). A position
beyond the log's end is one no acknowledged command handed out, and waiting for it would only
hold the requester (and, before, a handler slot) until its wait ran out: such a query is refused
at once. Knowing the end needs a round trip to the stream's leader, so it is shared the way
etcd shares its "read index": a look-up serves every caller that arrived before it was sent,
at most one is in flight, and callers arriving meanwhile share the next one. A flood of such
queries costs one look-up per round trip, not one per query.

The end never moves back, so an answer below a position known to exist is not the truth: a
server answered with stale state (seen after a SIGSTOPped stream leader woke: it answered
STREAM.INFO with its last sequence from before its hang, 71, to a query whose client held 720,
until it learnt that it had been deposed). Such an answer is never used: the look-up is sent
again a few times, a short while apart, and if every answer is stale the callers get
LogEndBehind (503, retry) rather than a read index that went backwards, or a refusal of a
position that exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from events.contract.errors import LogEndBehind

__all__ = ["LogEnd"]

# A stale answer is asked again after these pauses (~0.7 s in all), then refused with 503.
STALE_RETRY_DELAYS_S = (0.1, 0.2, 0.4)


class LogEnd:
    def __init__(
        self,
        lookup: Callable[[], Awaitable[int]],
        stale_retry_delays_s: tuple[float, ...] = STALE_RETRY_DELAYS_S,
    ) -> None:
        self._lookup = lookup
        self._stale_retry_delays_s = stale_retry_delays_s
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
                end = await self._current_end()
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

    async def _current_end(self) -> int:
        """A look-up's answer that is not below a known position, asking again if it is."""
        end = await self._lookup()
        for delay in self._stale_retry_delays_s:
            if end >= self._known:
                return end
            # A retry's pause, not a synchronisation: the stale server learns it was deposed
            # in a raft round trip once its routes are back.
            await asyncio.sleep(delay)
            end = await self._lookup()
        if end < self._known:
            raise LogEndBehind(
                f"the event log's end was reported as {end}, below position {self._known}, "
                f"which exists: a server answered with stale state (asked "
                f"{len(self._stale_retry_delays_s) + 1} times); retry"
            )
        return end
