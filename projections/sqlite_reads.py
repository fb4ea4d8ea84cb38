"""The live SQLite model's queries on plain `sqlite3`: reads on the event loop's own thread, and
filters, counts and pages wherever they are cheapest.

A read by id or name is one index lookup that SQLite answers in microseconds, while the general
path (SQLAlchemy's pool and statement, aiosqlite's hand-off to its thread and back) costs a
millisecond of the one Python thread. So the live SQLite model keeps one plain `sqlite3`
connection, read-only, whose statements are prepared once (sqlite3's statement cache) and run in
place. In WAL mode a reader never waits for the projector's writes; should the database still be
busy (a checkpoint of the WAL, a rebuild's swap), `busy_timeout=0` makes it say so at once
instead of stalling the loop, and the caller answers through the general path.

Filters, counts and pages run the statements projections/queries.py builds once per shape,
compiled here once to SQLite's SQL. Most answer in well under a millisecond, so they run in
place too; but a count over a million flows takes ~100 ms, which must not stop the loop. So a
query in place gets a time budget (SQLite's progress handler interrupts it past
`IN_PLACE_BUDGET_S`) and its shape, once over budget, runs on one reader thread of its own,
a whole query per hand-off, until it is cheap again. That thread's SQLite work does not hold the
GIL, so the loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from projections.queries import Prepared
from projections.tables import flow, flow_count, flow_tag_count

__all__ = ["IN_PLACE_BUDGET_S", "SQLiteBusy", "SQLiteDocuments"]

_BY_ID = f"SELECT {flow.c.document.name} FROM {flow.name} WHERE {flow.c.id.name} = ?"
_BY_NAME = f"SELECT {flow.c.document.name} FROM {flow.name} WHERE {flow.c.name.name} = ?"
_TAG_COUNTS = (
    f"SELECT {flow_tag_count.c.tag.name}, {flow_tag_count.c.flows.name} FROM {flow_tag_count.name} "
    f"WHERE {flow_tag_count.c.tag.name} IN (SELECT value FROM json_each(?))"
)
_EVERY_FLOW = f"SELECT {flow_count.c.flows.name} FROM {flow_count.name}"

# How much CPU time a query may take on the loop before it is interrupted and its shape sent to
# the reader thread.
IN_PLACE_BUDGET_S: Final = 0.002
# A shape sent to the reader thread comes back in place once it runs in under this share of
# the budget there. Not the whole budget, so one near it does not go back and forth (each
# interruption wastes its budget), but not half either: a shape interrupted once (a cold page
# cache, say) that then costs ~1.3 ms stayed on the thread for good, and a query on the thread
# costs about twice its CPU in hand-offs and GIL switches (a filter page: 1.3 ms in place,
# 2.6 ms of the service's CPU a request from the thread, py-spy).
_CHEAP_AGAIN: Final = 0.75
# SQLite calls the progress handler every this many virtual-machine steps (~50-200 µs of work;
# each call reads the thread's CPU clock, a system call).
_PROGRESS_STEPS: Final = 4000
# Compiled shapes kept (the same bound as queries.py's statements).
_CACHED_SHAPES: Final = 256

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]


class SQLiteBusy(Exception):
    """The database could not be read at once: use the general path."""


class _Interrupted(Exception):
    """A query in place ran past its budget."""


@dataclass(slots=True)
class _Compiled:
    """One statement as SQLite's SQL, and how to order a request's values for it."""

    sql: str
    names: tuple[str, ...]  # the bound parameters, in the order of the SQL's `?`s
    constants: dict[str, Any]  # values fixed in the statement (not the request's)
    processors: dict[str, Callable[[Any], Any]]  # SQLAlchemy's conversions (datetimes)
    heavy: bool = field(default=False)  # last ran past the budget: run it on the thread

    def args(self, params: dict[str, Any]) -> list[Any]:
        values = []
        for name in self.names:
            value = params[name] if name in params else self.constants[name]
            processor = self.processors.get(name)
            values.append(value if processor is None else processor(value))
        return values


def _connect(database: Path) -> sqlite3.Connection:
    db = sqlite3.connect(
        f"file:{database}?mode=ro",
        uri=True,
        isolation_level=None,  # autocommit: each SELECT reads the latest commit
        check_same_thread=False,  # used by one thread only, but closed from another
    )
    db.execute("PRAGMA busy_timeout = 0")
    return db


class SQLiteDocuments:
    def __init__(self, database: Path) -> None:
        self._database = database
        self._db = _connect(database)
        self._budget = _Budget(self._db)
        self._dialect = SQLiteDialect_pysqlite()
        self._compiled: OrderedDict[Hashable, _Compiled] = OrderedDict()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._reader_db = threading.local()
        self._reader_dbs: list[sqlite3.Connection] = []
        self.reader_used = 0  # queries answered on the reader thread

    # --- reads: one index lookup, always in place ---

    def by_id(self, flow_id: str) -> bytes | None:
        """The document of the flow with this id (any UUID spelling), or None."""
        try:
            canonical = str(uuid.UUID(flow_id))
        except ValueError:
            return None
        return self._one(_BY_ID, canonical)

    def by_name(self, name: str) -> bytes | None:
        return self._one(_BY_NAME, name)

    def _one(self, statement: str, key: str) -> bytes | None:
        try:
            row = self._db.execute(statement, (key,)).fetchone()
        except sqlite3.OperationalError as exc:  # "database is locked", a table being swapped
            raise SQLiteBusy(str(exc)) from exc
        return None if row is None else bytes(row[0])

    def tag_counts(self, tags: list[str]) -> tuple[dict[str, int], int]:
        """How many live flows carry each of `tags` (absent: none) and how many there are, from
        the counts the projector keeps (projections/tag_plan.py): two index look-ups."""
        try:
            carriers = dict(self._db.execute(_TAG_COUNTS, (json.dumps(tags),)).fetchall())
            every = self._db.execute(_EVERY_FLOW).fetchone()
        except sqlite3.OperationalError as exc:  # as `_one`
            raise SQLiteBusy(str(exc)) from exc
        return carriers, int(every[0]) if every is not None else 0

    # --- filters, counts, pages: in place within the budget, else on the reader thread ---

    async def documents(self, query: Prepared) -> list[bytes]:
        """The documents `query` selects (projections/queries.py `documents_query`)."""
        compiled = self._compile(query)
        args = compiled.args(query.params)
        return await self._run(compiled, lambda db: _documents(db, compiled.sql, args))

    async def count(self, query: Prepared) -> int:
        """The count `query` makes (projections/queries.py `count_query`)."""
        compiled = self._compile(query)
        args = compiled.args(query.params)
        return await self._run(compiled, lambda db: _count(db, compiled.sql, args))

    async def page(self, query: Prepared | None, total: Prepared) -> tuple[list[bytes], int]:
        """A page's documents (none when `query` is None) and the count, read from one moment."""
        counting = self._compile(total)
        count_args = counting.args(total.params)
        if query is None:
            return [], await self._run(counting, lambda db: _count(db, counting.sql, count_args))
        selecting = self._compile(query)
        args = selecting.args(query.params)

        def both(db: sqlite3.Connection) -> tuple[list[bytes], int]:
            # One read transaction: both statements see the same WAL snapshot (on an error,
            # the caller ends it).
            db.execute("BEGIN")
            answer = _documents(db, selecting.sql, args), _count(db, counting.sql, count_args)
            db.execute("COMMIT")
            return answer

        # The page is as heavy as its heavier statement, and teaches both what it cost.
        pair = _Compiled("", (), {}, {}, heavy=selecting.heavy or counting.heavy)
        answer = await self._run(pair, both)
        selecting.heavy = counting.heavy = pair.heavy
        return answer

    def _compile(self, query: Prepared) -> _Compiled:
        compiled = self._compiled.get(query.key)
        if compiled is not None:
            self._compiled.move_to_end(query.key)
            return compiled
        sql = query.statement.compile(dialect=self._dialect)
        if sql.positiontup is None or sql.literal_execute_params or sql.post_compile_params:
            # A statement whose SQL changes with its values: not one to keep compiled.
            raise SQLiteBusy("statement needs compiling per request")
        names = tuple(sql.positiontup)
        constants = {
            name: bind.effective_value
            for name, bind in ((n, sql.binds[n]) for n in names)
            if name not in query.params
        }
        processors: dict[str, Callable[[Any], Any]] = {}
        for name, processor in sql._bind_processors.items():
            if name in names:
                if not callable(processor):  # a tuple's processors: not a filter's value
                    raise SQLiteBusy(f"parameter {name} is not a single value")
                processors[name] = processor
        compiled = _Compiled(sql.string, names, constants, processors)
        self._compiled[query.key] = compiled
        if len(self._compiled) > _CACHED_SHAPES:
            self._compiled.popitem(last=False)
        return compiled

    async def _run(self, compiled: _Compiled, work: Work[T]) -> T:
        if not compiled.heavy:
            try:
                return self._budget.run(self._db, work)
            except _Interrupted:
                compiled.heavy = True
        self.reader_used += 1
        result, seconds = await asyncio.get_running_loop().run_in_executor(
            self._reader, self._on_reader, work
        )
        if seconds < IN_PLACE_BUDGET_S * _CHEAP_AGAIN:
            compiled.heavy = False  # cheap again (the model shrank, the page got small)
        return result

    def _on_reader(self, work: Work[T]) -> tuple[T, float]:
        db: sqlite3.Connection | None = getattr(self._reader_db, "db", None)
        if db is None:
            db = self._reader_db.db = _connect(self._database)
            self._reader_dbs.append(db)
        started = time.thread_time()
        try:
            return work(db), time.thread_time() - started
        except sqlite3.OperationalError as exc:
            _end_transaction(db)
            raise SQLiteBusy(str(exc)) from exc

    def close(self) -> None:
        self._reader.shutdown(wait=True)
        for db in self._reader_dbs:
            db.close()
        self._db.close()


class _Budget:
    """The loop connection's progress handler, installed once (installing one per query costs
    more than a small query): it interrupts a query past `deadline`, the loop thread's CPU time
    (not the clock: on a busy machine a cheap query can be preempted for milliseconds, which
    says nothing about what it costs). Between budgeted queries the deadline is infinite."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.deadline = math.inf
        db.set_progress_handler(self._past, _PROGRESS_STEPS)

    def _past(self) -> bool:
        return time.thread_time() > self.deadline

    def run(self, db: sqlite3.Connection, work: Work[T]) -> T:
        self.deadline = time.thread_time() + IN_PLACE_BUDGET_S
        try:
            return work(db)
        except sqlite3.OperationalError as exc:
            self.deadline = math.inf  # before the ROLLBACK, which must not be interrupted
            _end_transaction(db)
            if "interrupt" in str(exc):
                raise _Interrupted() from exc
            raise SQLiteBusy(str(exc)) from exc
        finally:
            self.deadline = math.inf


def _end_transaction(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def _documents(db: sqlite3.Connection, sql: str, args: list[Any]) -> list[bytes]:
    return [row[0] for row in db.execute(sql, args)]


def _count(db: sqlite3.Connection, sql: str, args: list[Any]) -> int:
    row = db.execute(sql, args).fetchone()
    return int(row[0])
