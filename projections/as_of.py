"""Answering queries as of an earlier point in the log (`Flows-As-Of`).

The read model holds only the present, so a past state is rebuilt on demand: the log is
replayed up to the position into a scratch in-memory SQLite model (projections/scratch.py),
with the projector's own apply code, and the ordinary query code runs against it. So an as-of
answer is exactly what the live model answered when it had applied the log up to that position.

Cost, and its bounds:
- Building a model at position P reads and applies P log messages (tens of thousands per second;
  see README). Positions above `max_events` are refused with a 422 that says so.
- The last `cache_size` models are kept (LRU by position), so a tool paging through one point
  in time pays once. Each costs memory in proportion to the flows alive at that point.
- One model is built at a time; queries on one model take turns (a scratch model has one
  connection), which is plenty for audit use and keeps the service's CPU for live traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.contract.errors import FlowsError
from events.contract.subjects import Subjects
from events.log import EventLog
from projections.log_points import LogPoint, resolve_point
from projections.scratch import create_scratch_model, replay_into

__all__ = ["AsOfModels", "AsOfRefused"]

log = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS = 200_000
DEFAULT_CACHE_SIZE = 3
_PAGE = 2000


class AsOfRefused(FlowsError):
    """An as-of point this service will not answer for (past the log's end, or too costly)."""

    status = 422


@dataclass
class _Model:
    position: int
    engine: AsyncEngine
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


class AsOfModels:
    def __init__(
        self,
        event_log: EventLog,
        subjects: Subjects,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._log = event_log
        self._subjects = subjects
        self._max_events = max_events
        self._cache_size = cache_size
        self._models: OrderedDict[int, _Model] = OrderedDict()
        self._building = asyncio.Lock()

    async def resolve(self, point: LogPoint) -> int:
        """The log position a `Flows-As-Of` value names (a time: the last position stored by
        then)."""
        return await resolve_point(self._log, point)

    @contextlib.asynccontextmanager
    async def connect(self, position: int) -> AsyncIterator[AsyncConnection]:
        """A connection to the read model as it was after applying the log up to `position`."""
        model = await self._model(position)
        async with model.turn, model.engine.connect() as conn:
            yield conn

    async def close(self) -> None:
        while self._models:
            _, model = self._models.popitem()
            await model.engine.dispose()

    async def _model(self, position: int) -> _Model:
        found = self._cached(position)
        if found is not None:
            return found
        end = await self._log.last_position()
        if position > end:
            raise AsOfRefused(
                f"Flows-As-Of position {position} is past the end of the event log "
                f"(position {end}): ask for {end} or earlier"
            )
        if position > self._max_events:
            raise AsOfRefused(
                f"Flows-As-Of position {position} would replay {position} log messages, more "
                f"than this service's limit of {self._max_events} for as-of queries "
                "(FLOWS_AS_OF_MAX_EVENTS); ask for an earlier point, or rebuild that state "
                "offline with `flows replay --to`"
            )
        async with self._building:
            found = self._cached(position)  # built by the request we waited for
            if found is None:
                found = await self._build(position)
                self._models[position] = found
                while len(self._models) > self._cache_size:
                    _, evicted = self._models.popitem(last=False)
                    async with evicted.turn:
                        await evicted.engine.dispose()
            return found

    def _cached(self, position: int) -> _Model | None:
        model = self._models.get(position)
        if model is not None:
            self._models.move_to_end(position)
        return model

    async def _build(self, position: int) -> _Model:
        engine = await create_scratch_model()
        try:
            messages = await replay_into(
                engine, self._log, self._subjects, until=position, max_batch=_PAGE
            )
        except BaseException:
            await engine.dispose()
            raise
        log.info(
            "built an as-of read model at log position %d from %d messages", position, messages
        )
        return _Model(position, engine)
