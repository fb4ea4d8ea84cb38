"""Building as-of models: a scratch model of the log as of a position, copied from the nearest
snapshot at or below it (projections/snapshots.py) and replayed forward from there; and the
follower that takes those snapshots every `every` positions as the log grows.

Both fold the log with the projector's own `apply_messages` (projections/scratch.py), so a
model built here holds exactly what the live model held at that position.

An answer's cost is mostly fixed, not its replay (a few messages apply in a millisecond), and it
is paid on the worker's niced CPU while a closed-loop client's slot waits: so a position that is
a snapshot's is answered by linking the snapshot in (no copy, no engine), and a replay takes its
messages from the follower's recent window (projections/recent_messages.py) when it holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.contract.errors import FlowsError
from events.contract.subjects import Subjects
from events.log import EventLog, StoredMessage
from projections.attached_models import AttachedModels
from projections.projector import apply_messages
from projections.recent_messages import RecentMessages
from projections.scratch import create_scratch_model
from projections.snapshots import SnapshotStore
from projections.tables import LIVE

__all__ = ["AsOfBuilder", "AsOfRefused", "ModelBuilder"]

log = logging.getLogger(__name__)

_PAGE = 2000
# A snapshot copies the whole model (~400 bytes per flow alive), so on a large model they are
# spaced at least this many positions per flow alive apart: 1M flows, every 100k positions,
# ~4 KB copied per log position, a few MB/s at thousands of events/s instead of the whole model
# every `every` positions. The price is a longer replay for an as-of answer there (bounded by
# the spacing: seconds at the fold's rate).
_FLOWS_PER_POSITION_OF_SPACING = 10
# Messages the follower holds before applying them short of a boundary (memory stays bounded
# when snapshots are spaced wide).
_MAX_HELD = 10_000
# Models written at once (the service asks for at most 4 at a time: projections/as_of.py).
_BUILDS = 4
# Messages the follower keeps for replays (~1 KB each): the last this many positions are
# answered without reading the log again.
_RECENT = 20_000


class AsOfRefused(FlowsError):
    """An as-of point this service will not answer for (past the log's end, or too costly)."""

    status = 422


class ModelBuilder(Protocol):
    async def materialize(self, position: int, path: Path) -> int:
        """Write the model as of `position` to the SQLite file `path` (which must not exist);
        the number of log messages replayed. AsOfRefused when that would cost too much."""
        ...

    async def close(self) -> None: ...


class AsOfBuilder:
    """`store` None: no snapshots, every model is replayed from the start of the log."""

    def __init__(
        self,
        event_log: EventLog,
        subjects: Subjects,
        store: SnapshotStore | None,
        *,
        every: int,
        max_events: int,
        recent: int = _RECENT,
    ) -> None:
        self._log = event_log
        self._subjects = subjects
        self._store = store
        self._every = every
        self._max_events = max_events
        self.recent = RecentMessages(recent)  # what the follower read last, for replays
        self._attached: AttachedModels | None = None  # opened by the first replay into a copy
        self.followed = 0  # the position of the follower's newest snapshot
        # How the replays of models built so far read their messages (for tests and profiles).
        self.replays_from_window = 0
        self.replays_from_log = 0

    async def materialize(self, position: int, path: Path) -> int:
        start = self._start_from_snapshot(position, path)
        if start and start == position:
            return 0  # the snapshot is the model: linked in, nothing to open or replay
        pages = self._pages(start, position)
        if start:
            # A copy has its tables: creating them again would double the cost of a short
            # replay, and so would opening an engine on it (projections/attached_models.py).
            async with self._attached_models().writing(path) as conn:
                await self._apply(conn, pages)
            return position - start
        engine = await create_scratch_model(path)
        try:
            async with engine.connect() as conn:
                await self._apply(conn, pages)
        finally:
            await engine.dispose()
        return position - start

    def _pages(self, start: int, position: int) -> AsyncGenerator[Sequence[StoredMessage]]:
        """The log's messages in (`start`, `position`]: from the follower's window if it holds
        them all, else read from the log."""
        window = self.recent.between(start, position)
        if window is None:
            self.replays_from_log += 1
            return self._log.pages(start, until=position, max_batch=_PAGE)
        self.replays_from_window += 1
        return _pages_of(window)

    async def _apply(
        self, conn: AsyncConnection, pages: AsyncGenerator[Sequence[StoredMessage]]
    ) -> None:
        async with contextlib.aclosing(pages):  # a failed page stops the read ahead too
            async for page in pages:
                async with conn.begin():
                    await apply_messages(conn, self._subjects, page)

    def _attached_models(self) -> AttachedModels:
        if self._attached is None:
            self._attached = AttachedModels(_BUILDS)
        return self._attached

    def _start_from_snapshot(self, position: int, path: Path) -> int:
        """Put the nearest snapshot at or below `position` at `path`; its position (0: none,
        `path` not made). Refuses a replay from there that would cost too much."""
        while True:
            start = self._store.nearest(position) if self._store else 0
            self._check_cost(position, start)
            if not start:
                return 0
            assert self._store is not None
            try:
                # On the loop: a link takes microseconds and a copy ~1 ms (the kernel's), less
                # than waking a thread of this niced process costs when the machine is busy.
                _place(self._store.path(start), path, start == position)
                return start
            except FileNotFoundError:  # thinned away by another worker, still exiting
                self._store.forget(start)

    def _check_cost(self, position: int, start: int) -> None:
        replay = position - start
        if self._max_events <= 0 or replay <= self._max_events:
            return
        nearest = f"the nearest snapshot (position {start})" if start else "the start of the log"
        if self._store is None:
            building = ""
        elif position > self.followed:
            building = (
                f"; snapshots are taken every {self._every} positions by the as-of worker, "
                f"which has reached position {self.followed}: retry once it passes {position}"
            )
        else:
            building = (
                "; snapshots are thinned to fit FLOWS_AS_OF_SNAPSHOT_MAX_MB: raise it (or this "
                "limit) to answer here"
            )
        raise AsOfRefused(
            f"Flows-As-Of position {position} would replay {replay} log messages from "
            f"{nearest}, more than this service's limit of {self._max_events} for as-of "
            f"queries (FLOWS_AS_OF_MAX_EVENTS){building}; or ask for an earlier point, or "
            "rebuild that state offline with `flows replay --to`"
        )

    async def close(self) -> None:
        if self._attached is not None:
            await self._attached.close()

    async def _spacing(self, engine: AsyncEngine) -> int:
        """Positions between snapshots: `every`, or wider on a model with many flows."""
        async with engine.connect() as conn:
            alive = (await conn.execute(select(func.count()).select_from(LIVE.flow))).scalar_one()
        return max(self._every, int(alive) // _FLOWS_PER_POSITION_OF_SPACING)

    async def follow(self) -> None:
        """Fold the log as it grows into a model of its own and snapshot it every `every`
        positions, until cancelled; starts from the newest snapshot on disk."""
        store = self._store
        assert store is not None and self._every > 0
        if store.newest() > await self._log.last_position():
            log.warning("as-of snapshots in %s are ahead of the log: discarded", store.directory)
            store.clear()
        # Its own file: a worker still exiting may follow into the same directory meanwhile.
        head = store.directory / f"head-{os.getpid()}.work"
        position = store.newest()
        if position:
            await asyncio.to_thread(shutil.copyfile, store.path(position), head)
        self.followed = position
        self.recent.restart(position)
        engine = await create_scratch_model(head)
        try:
            # Held until a boundary is reached (or too many are held), then applied in one
            # transaction: the model is only ever copied at a boundary, and one transaction
            # per `every` messages costs a fraction of one per batch that arrives.
            held: list[StoredMessage] = []
            snapshot_at, spacing = position, await self._spacing(engine)
            batches = self._log.follow(position, _PAGE)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    self.recent.extend(batch)
                    held.extend(message for message in batch if message.position > position)
                    if held:
                        position = max(position, held[-1].position)
                    while held:
                        # The first multiple of `every` at or above the next position, and a
                        # spacing the model's size affords past the last snapshot.
                        spaced = snapshot_at + spacing
                        boundary = -(-max(held[0].position, spaced) // self._every) * self._every
                        chunk = [message for message in held if message.position <= boundary]
                        if held[-1].position < boundary and len(held) < _MAX_HELD:
                            break  # not there yet
                        held = held[len(chunk) :]
                        async with engine.begin() as conn:
                            await apply_messages(conn, self._subjects, chunk)
                        if not held and chunk[-1].position < boundary:
                            continue  # applied to keep memory bounded; no snapshot yet
                        # At the boundary, or the log has nothing between the chunk's last
                        # message and it (a gap): the model as of the boundary, a snapshot.
                        snapshot_at = chunk[-1].position
                        await asyncio.to_thread(store.add, head, snapshot_at)
                        self.followed = snapshot_at
                        spacing = await self._spacing(engine)
        finally:
            await engine.dispose()
            head.unlink(missing_ok=True)


async def _pages_of(messages: list[StoredMessage]) -> AsyncGenerator[Sequence[StoredMessage]]:
    for first in range(0, len(messages), _PAGE):
        yield messages[first : first + _PAGE]


def _place(snapshot: Path, path: Path, as_is: bool) -> None:
    """The snapshot's model at `path`: a hard link where it is read `as_is` (a snapshot is never
    written once in place, and a link outlives its thinning), else a copy to replay into."""
    if as_is:
        try:
            os.link(snapshot, path)
            return
        except FileNotFoundError:
            raise
        except OSError:  # a file system without hard links: copy instead
            pass
    shutil.copyfile(snapshot, path)
