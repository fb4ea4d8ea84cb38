"""Answering queries as of an earlier point in the log (`Flows-As-Of`).

The read model holds only the present, so a past state is built on demand: a `ModelBuilder`
(projections/as_of_builder.py; in `flows serve`, a worker process of its own at a lower CPU
priority: services/as_of_client.py) writes the model as of the position to a SQLite file,
starting from the nearest snapshot at or below it and replaying the log forward with the
projector's own apply code; the ordinary query code then runs against that file. So an as-of
answer is exactly what the live model answered when it had applied the log up to that position.

Cost, and its bounds:
- Building a model at position P replays the log from the nearest snapshot S <= P: fewer than
  FLOWS_AS_OF_SNAPSHOT_EVERY messages once the snapshots have caught up with the log. Replays
  longer than `FLOWS_AS_OF_MAX_EVENTS` are refused with a 422 that says so.
- A built model is read on plain `sqlite3` (projections/sqlite_reads.py), read-only: opening an
  SQLAlchemy engine and its aiosqlite thread per model cost 15-70 ms of an answer's wall time.
  Queries that plain path cannot answer open an engine on the model, once, when first asked.
- The last `cache_size` models are kept (LRU by position), so a tool paging through one point
  in time pays once. Each is a file in `work_dir`, of the size of the flows alive then.
- At most `_BUILDS` models are built at once (a second request for a position being built
  waits for it); queries on one model take turns (one connection each).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.log import EventLog
from projections.as_of_builder import AsOfRefused, ModelBuilder
from projections.log_points import LogPoint, resolve_point
from projections.scratch import open_scratch_model
from projections.sqlite_reads import SQLiteDocuments

__all__ = ["AsOfModels", "AsOfRefused"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 3
_BUILDS = 4


@dataclass
class _Model:
    position: int
    path: Path
    documents: SQLiteDocuments
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    disposed: bool = False
    _engine: AsyncEngine | None = None

    def engine(self) -> AsyncEngine:
        """For queries plain sqlite3 cannot answer; opened the first time one is asked."""
        if self._engine is None:
            self._engine = open_scratch_model(self.path)
        return self._engine

    async def dispose(self) -> None:
        async with self.turn:
            self.disposed = True
            self.documents.close()
            if self._engine is not None:
                await self._engine.dispose()
        self.path.unlink(missing_ok=True)


class AsOfModels:
    """`work_dir` (emptied here; None: a temporary directory) holds the built models' files."""

    def __init__(
        self,
        event_log: EventLog,
        builder: ModelBuilder,
        work_dir: Path | None = None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._log = event_log
        self._builder = builder
        self._own_dir = work_dir is None
        self._dir = Path(tempfile.mkdtemp(prefix="flows-as-of-")) if work_dir is None else work_dir
        shutil.rmtree(self._dir, ignore_errors=True)  # models of a process that ended
        self._dir.mkdir(parents=True, exist_ok=True)
        self._cache_size = max(1, cache_size)
        self._models: OrderedDict[int, _Model] = OrderedDict()
        self._building: dict[int, asyncio.Lock] = {}
        self._builds = asyncio.Semaphore(_BUILDS)
        self._names = itertools.count(1)

    async def resolve(self, point: LogPoint) -> int:
        """The log position a `Flows-As-Of` value names (a time: the last position stored by
        then)."""
        return await resolve_point(self._log, point)

    @contextlib.asynccontextmanager
    async def connect(self, position: int) -> AsyncIterator[AsyncConnection]:
        """A connection to the read model as it was after applying the log up to `position`."""
        async with self._turn(position) as model, model.engine().connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def documents(self, position: int) -> AsyncIterator[SQLiteDocuments]:
        """That model on plain sqlite3 (SQLiteBusy from a query: ask `connect` instead)."""
        async with self._turn(position) as model:
            yield model.documents

    @contextlib.asynccontextmanager
    async def _turn(self, position: int) -> AsyncIterator[_Model]:
        while True:
            model = await self._model(position)
            async with model.turn:
                if model.disposed:  # evicted while this request waited for its turn
                    continue
                yield model
                return

    async def close(self) -> None:
        while self._models:
            _, model = self._models.popitem()
            await model.dispose()
        await self._builder.close()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

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
        building = self._building.setdefault(position, asyncio.Lock())
        try:
            async with building:
                found = self._cached(position)  # built by the request we waited for
                if found is None:
                    async with self._builds:
                        found = await self._build(position)
                    if (twin := self._cached(position)) is not None:  # a failed build's waiter
                        await found.dispose()
                        return twin
                    self._models[position] = found
                    while len(self._models) > self._cache_size:
                        _, evicted = self._models.popitem(last=False)
                        await evicted.dispose()
                return found
        finally:
            if not building.locked():
                self._building.pop(position, None)

    def _cached(self, position: int) -> _Model | None:
        model = self._models.get(position)
        if model is not None:
            self._models.move_to_end(position)
        return model

    async def _build(self, position: int) -> _Model:
        path = self._dir / f"model-{next(self._names)}.sqlite"
        try:
            messages = await self._builder.materialize(position, path)
            documents = SQLiteDocuments(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        log.info("built an as-of read model at log position %d (%d messages replayed)",
                 position, messages)  # fmt: skip
        return _Model(position, path, documents)
