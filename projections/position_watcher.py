"""Waiting for the read model to reach a log position: event-driven, never polling."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["PositionWatcher"]


class PositionWatcher:
    """Tracks the last log position the read model has applied and wakes waiters past it."""

    def __init__(self, position: int = 0) -> None:
        self._position = position
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def position(self) -> int:
        return self._position

    def advance(self, position: int) -> None:
        """Called by the projector after each committed batch."""
        if position <= self._position:
            return
        self._position = position
        while self._waiters and self._waiters[0][0] <= position:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    async def wait_for(self, position: int, timeout_s: float) -> bool:
        """True once the read model has applied `position`; False if the wait ran out first."""
        if position <= self._position:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (position, next(self._order), future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            future.cancel()
            return position <= self._position
        return True
