"""The composition root's resources: one NATS connection for the log, the read-model engine,
the projector task. Created on start-up, closed on shutdown; nothing exists at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from events.jetstream import JetStreamLog
from events.subjects import Subjects
from events.writer import FlowWriter
from projections.as_of import AsOfModels
from projections.leadership import ProjectorLeadership
from projections.log_end import LogEnd
from projections.positions import PositionWatcher
from projections.projector import Projector
from projections.store import configure_engine
from services.audit import AuditReader
from services.consistency import ReadPositions
from services.database_readiness import create_schema_when_ready
from services.jetstream_readiness import ensure_stream_when_ready
from services.nats_options import Role, connect_options
from services.seeds import seed_urls
from services.settings import Settings, redact_url
from services.started import NotStarted, Started

__all__ = ["NatsRefused", "Runtime", "connect_nats", "create_engine"]

log = logging.getLogger(__name__)


class NatsRefused(ConnectionError):
    """NATS answered but refused this client: wrong or missing credentials, or a TLS
    certificate it does not accept. Retrying cannot help; the settings must change."""


async def connect_nats(
    settings: Settings, name: str, *, retry: bool = True, role: Role = "log"
) -> NatsClient:
    """A connection that never gives up reconnecting (nats-py stops after ~2 minutes by
    default), or, for one-shot tools, one that fails fast. Authentication, TLS and the inbox
    prefix come from the settings for `role` (services/nats_options.py: the log's connection
    and the tools that read the log are "log"); log lines name the server without its
    credentials.

    A server that refuses the credentials on the first connection raises NatsRefused at once
    (nats-py would retry forever), so a misconfigured service exits with the reason."""
    where = redact_url(settings.nats_url)
    connection: list[NatsClient] = []

    async def on_error(error: Exception) -> None:
        # nats-py's default prints a traceback per failed attempt; one line says enough.
        log.warning("NATS connection %s at %s: %s", name, where, error or repr(error))
        if not connection and _is_refusal(error):
            # Raised inside nats-py's connect loop, this ends it (see below).
            raise NatsRefused(
                f"NATS at {where} refused the connection {name}: {error or repr(error)}; check "
                "the credentials and TLS settings (FLOWS_NATS_USER/PASSWORD, FLOWS_NATS_TOKEN, "
                "FLOWS_NATS_NKEY_SEED, FLOWS_NATS_CREDS, their FLOWS_NATS_LOG_* counterparts "
                "for the log's connection, FLOWS_NATS_TLS_*) against the server's"
            ) from None

    async def on_disconnect() -> None:
        if not connection or connection[0].is_closed:
            return  # a first attempt that failed (reported above), or our own close or drain
        log.warning("NATS connection %s lost; reconnecting to %s", name, where)

    async def on_reconnect() -> None:
        log.info("NATS connection %s re-established", name)

    nc = NatsClient()
    try:
        await nc.connect(
            seed_urls(settings.nats_url),  # one URL or a cluster's seed list
            name=name,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            # nats-py reads 0 as "no limit": one attempt is 1.
            max_reconnect_attempts=-1 if retry else 1,
            allow_reconnect=retry,
            connect_timeout=2,
            # Annotated int, used as a float (asyncio.sleep).
            reconnect_time_wait=0.5,  # type: ignore[arg-type]
            # A hung server is left after ~2 intervals (Settings.nats_ping_interval_s).
            ping_interval=settings.nats_ping_interval_s,  # type: ignore[arg-type]
            max_outstanding_pings=2,
            **connect_options(settings, role),
        )
    except BaseException:
        # nats-py leaves the socket of a failed first attempt open. After a failed TLS
        # handshake asyncio has closed the socket already but nats-py's close would wait
        # forever for it: bound the wait.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
        raise
    connection.append(nc)
    return nc


def _is_refusal(error: Exception) -> bool:
    if isinstance(error, ssl.SSLError):  # e.g. the server's certificate is not trusted
        return True
    text = str(error).lower()
    return "authorization violation" in text or "authentication" in text


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    configure_engine(engine)
    return engine


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.subject_prefix)
        self._nc: NatsClient | None = None
        self._engine: AsyncEngine | None = None
        self._projector_task: asyncio.Task[None] | None = None
        self._started: Started | None = None
        self._leadership: ProjectorLeadership | None = None
        # The parts that health and metrics read, once started.
        self.event_log: JetStreamLog | None = None
        self.watcher: PositionWatcher | None = None
        self.writer: FlowWriter | None = None

    async def start(self) -> None:
        settings = self.settings
        self._nc = await connect_nats(settings, "flows-service-log")
        event_log = JetStreamLog(self._nc, self.subjects, settings.stream, settings.log_timeout_s)
        # Both wait, up to FLOWS_STARTUP_TIMEOUT_S, for a cluster still forming or a database
        # still starting (services/startup.py).
        await ensure_stream_when_ready(event_log, self._nc, settings)
        self.event_log = event_log
        self._engine = create_engine(settings)
        await create_schema_when_ready(self._engine, settings)
        watcher = self.watcher = PositionWatcher()
        projector = Projector(self._engine, event_log, self.subjects, watcher)
        applied = await projector.load_checkpoint()
        log_end = await event_log.last_position()
        self.writer = FlowWriter(event_log, self.subjects)
        self._started = Started(
            writer=self.writer,
            engine=self._engine,
            # Queries wait until the projector has caught up with the log as it was at
            # start-up.
            positions=ReadPositions(watcher, LogEnd(event_log.last_position), start=log_end),
            audit=AuditReader(event_log, self.subjects),
            as_of=AsOfModels(
                event_log,
                self.subjects,
                max_events=settings.as_of_max_events,
                cache_size=settings.as_of_cached_models,
            ),
        )
        if self._engine.dialect.name == "postgresql":
            # A shared model: one instance projects at a time, the others follow its checkpoint.
            self._leadership = ProjectorLeadership(
                self._engine,
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
        if self._engine is not None:
            await self._engine.dispose()


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
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
