"""The composition root: the one place the service's parts are built, for `flows serve`
(`Service`), for the log tools (`tool_log`, `read_model`: replay, rebuild, verify) and for the
tests. Nothing else constructs a JetStream log or a database engine; nothing exists at import
time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.client import Client as NatsClient
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, open_log
from events.log import EventLog
from events.writer import FlowWriter
from projections.as_of import AsOfModels
from projections.as_of_builder import AsOfBuilder, ModelBuilder
from projections.dialect import dialect_named, dialect_of
from projections.leadership import ProjectorLeadership
from projections.log_end import LogEnd
from projections.position_watcher import PositionWatcher
from projections.projector import Projector
from projections.rebuild import rebuild_online
from projections.store import configure_engine, read_schema_version
from projections.tables import SCHEMA_VERSION
from services.as_of_client import WorkerBuilder
from services.audit_reader import AuditReader
from services.consistency import ReadPositions
from services.database_readiness import create_schema_when_ready
from services.jetstream_readiness import ensure_stream_when_ready
from services.nats_connection import connect_nats
from services.settings import Settings
from services.started import NotStarted, Started

__all__ = ["Service", "create_engine", "read_model", "tool_log"]

log = logging.getLogger(__name__)


def create_engine(settings: Settings) -> AsyncEngine:
    """The live read model's engine (FLOWS_DATABASE_URL, or SQLite in the data dir)."""
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url, **dialect_named(make_url(url).get_backend_name()).engine_options()
    )
    configure_engine(engine)
    return engine


@contextlib.asynccontextmanager
async def read_model(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The live read model's engine for a tool, disposed of on exit."""
    engine = create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def tool_log(settings: Settings, name: str) -> AsyncIterator[JetStreamLog]:
    """The event log on a connection of the tool's own that fails fast (never reconnects),
    closed on exit; LogUnavailable when NATS cannot be reached."""
    connect = functools.partial(connect_nats, settings, name, retry=False)
    subjects = Subjects(settings.subject_prefix)
    async with open_log(connect, subjects, settings.stream, settings.log_timeout_s) as event_log:
        yield event_log


class Service:
    """The service's parts for `flows serve`, built once: the log's connection and the log,
    the read model's engine, the writer, the projector (alone, or under the shared model's
    leadership), and what the route table's handlers reach through `started()`.

    Construction does no I/O (the engine connects lazily); `start` connects, waits for its
    dependencies, and starts the projector; `stop` closes everything it opened.

    `event_log` is for tests that run the service in-process without NATS
    (events/memory_log.py): given one, `start` uses it as it is, connecting to no NATS and
    creating no stream. `flows serve` never passes one."""

    def __init__(self, settings: Settings, event_log: EventLog | None = None) -> None:
        self.settings = settings
        self._given_log = event_log
        self.subjects = Subjects(settings.subject_prefix)
        self._nc: NatsClient | None = None
        # One engine for the live model: the projector, the queries, and the health report
        # (which answers while start-up still waits for NATS).
        self.engine = create_engine(settings)
        self._projector_task: asyncio.Task[None] | None = None
        self._started: Started | None = None
        self._leadership: ProjectorLeadership | None = None
        # The parts that health and metrics read, once started.
        self.event_log: EventLog | None = None
        self.watcher: PositionWatcher | None = None
        self.writer: FlowWriter | None = None

    async def start(self) -> None:
        settings = self.settings
        given = self._given_log
        event_log = given if given is not None else await self._open_stream()
        self.event_log = event_log
        await create_schema_when_ready(self.engine, settings)
        await self._upgrade_read_model(event_log)
        watcher = self.watcher = PositionWatcher()
        projector = Projector(self.engine, event_log, self.subjects, watcher)
        applied = await projector.load_checkpoint()
        log_end = await event_log.last_position()
        self.writer = FlowWriter(event_log, self.subjects)
        self._started = Started(
            writer=self.writer,
            engine=self.engine,
            # Queries wait until the projector has caught up with the log as it was at
            # start-up.
            positions=ReadPositions(watcher, LogEnd(event_log.last_position), start=log_end),
            audit=AuditReader(event_log, self.subjects),
            as_of=AsOfModels(
                event_log,
                self._as_of_builder(event_log),
                settings.data_dir / "as-of" / "work",
                cache_size=settings.as_of_cached_models,
            ),
            documents=dialect_of(self.engine).documents_in_place(self.engine),
        )
        if dialect_of(self.engine).shared_by_instances:
            # A shared model: one instance projects at a time, the others follow its checkpoint.
            self._leadership = ProjectorLeadership(
                self.engine,
                settings.stream,
                watcher,
                lambda: _supervised(projector.run),
                retry_s=settings.leader_retry_s,
            )
            self._projector_task = asyncio.create_task(
                self._leadership.run(), name="flows-projector-leadership"
            )
        else:  # this instance's own model (SQLite): always its own projector
            self._projector_task = asyncio.create_task(
                _supervised(projector.run), name="flows-projector"
            )
        log.info(
            "event log %s at position %d, read model at %d (%s); subscribing",
            settings.stream,
            log_end,
            applied,
            _safe_url(settings.resolved_database_url),
        )

    def _as_of_builder(self, event_log: EventLog) -> ModelBuilder:
        """As-of models are built by a worker process at a lower CPU priority; on a log given
        in-process (tests without NATS), which no other process can read, here."""
        if self._given_log is None:
            return WorkerBuilder(self.settings)
        return AsOfBuilder(
            event_log, self.subjects, None, every=0, max_events=self.settings.as_of_max_events
        )

    async def _open_stream(self) -> JetStreamLog:
        """The JetStream log on a connection of its own, its stream created or checked."""
        settings = self.settings
        self._nc = await connect_nats(settings, "flows-service-log")
        event_log = JetStreamLog(self._nc, self.subjects, settings.stream, settings.log_timeout_s)
        # Both this and the schema wait, up to FLOWS_STARTUP_TIMEOUT_S, for a cluster still
        # forming or a database still starting (services/startup.py).
        await ensure_stream_when_ready(event_log, self._nc, settings)
        return event_log

    async def _upgrade_read_model(self, event_log: EventLog) -> None:
        """A model of another schema version (or of none: written before versions were
        recorded) is rebuilt from the log before this instance answers a query, never
        migrated by hand; one of the current version is used as it is."""
        async with self.engine.connect() as conn:
            found = await read_schema_version(conn)
        if found == SCHEMA_VERSION:
            return
        where = _safe_url(self.settings.resolved_database_url)
        log.warning(
            "the read model at %s is of schema version %s and this code writes version %d: "
            "rebuilding it from the event log before answering queries",
            where,
            "none (written before versions were recorded)" if found is None else found,
            SCHEMA_VERSION,
        )
        report = await rebuild_online(self.engine, event_log, self.subjects)
        log.info(
            "rebuilt the read model at %s to schema version %d: %d log messages up to position "
            "%d in %.1fs",
            where,
            SCHEMA_VERSION,
            report.messages,
            report.position,
            report.elapsed_s,
        )

    def started(self) -> Started:
        """The parts requests need; NotStarted (503) before start-up completes or once the
        service stops."""
        if self._started is None:
            raise NotStarted()
        return self._started

    @property
    def is_started(self) -> bool:
        return self._started is not None

    @property
    def projector_role(self) -> str:
        """What this instance's projector does: "leader" (writes the shared PostgreSQL model) or
        "follower" (another instance does; projections/leadership.py), or "local" for a model
        of this instance's own (SQLite), which its projector always writes."""
        return "local" if self._leadership is None else self._leadership.role

    async def stop(self) -> None:
        if self._projector_task is not None:
            # One cancellation, awaited: a second one would interrupt the projector's rollback
            # and leak its database connection (and, with aiosqlite, a thread that keeps the
            # process alive). The leadership stops its projector before it lets the lock go.
            self._projector_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._projector_task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        started, self._started = self._started, None
        if started is not None:
            await started.as_of.close()  # the scratch models of as-of queries
            if started.documents is not None:
                started.documents.close()
        await self.engine.dispose()


async def _supervised(run: Callable[[], Awaitable[None]]) -> None:
    """Keep the projector running: after a failure, start again from the checkpoint."""
    delay = 0.5
    while True:
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "the projector stopped; restarting from its checkpoint in %.1fs (queries that "
                "need newer positions wait, then answer 503)",
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _safe_url(url: str) -> str:
    """A database URL fit for a log line: never the password."""
    return make_url(url).render_as_string(hide_password=True)
