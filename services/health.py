"""`P.audit.stats`: the service's health — how far the read model has applied the log, how far
the log goes, and every log message the projector parked instead of applying.

A parked message (malformed JSON, an unknown event type, a payload of the wrong shape on
`P.events.<id>`) is never silently skipped: it makes the status "degraded" until an operator
deals with it, and `flows stats` shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from events.errors import FlowsError, LogUnavailable, ServiceUnavailable
from events.jetstream import JetStreamLog
from events.subjects import Subjects
from events.validation import load_json_body, validate_body
from projections.health import read_projection_health
from services.replies import Reply, error_reply, json_reply
from services.runtime import create_engine
from services.settings import Settings

__all__ = ["HealthReporter", "StatsRequest"]

log = logging.getLogger(__name__)


class StatsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # How many parked messages to list (the count is always exact).
    parked_limit: Annotated[int, Field(ge=0, le=1000)] = 100


class HealthReporter:
    """Answers `stats` from the read model's database and the log's stream info.

    It keeps an engine of its own (a small pool beside the projector's), so that it needs nothing
    from the runtime but settings and the service's NATS connection.
    """

    def __init__(self, settings: Settings, connection: Callable[[], NatsClient]) -> None:
        self._settings = settings
        self._subjects = Subjects(settings.subject_prefix)
        self._connection = connection
        self._engine: AsyncEngine | None = None
        self._log: JetStreamLog | None = None

    async def start(self) -> None:
        self._engine = create_engine(self._settings)

    def _event_log(self) -> JetStreamLog:
        # Built on first use: the broker's connection exists only once the broker has started.
        if self._log is None:
            settings = self._settings
            self._log = JetStreamLog(
                self._connection(), self._subjects, settings.stream, settings.log_timeout_s
            )
        return self._log

    async def stop(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    def ready(self) -> HealthReporter | None:
        """Itself once started (the app answers 503 "starting" before)."""
        return self if self._engine is not None else None

    async def stats(self, payload: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            request: StatsRequest = validate_body(StatsRequest, load_json_body(payload))
            return json_reply(200, await self._report(request.parked_limit))
        except FlowsError as error:
            return error_reply(error)
        except SQLAlchemyError:
            log.exception("the read model failed a stats request")
            return error_reply(
                ServiceUnavailable("the read model could not answer now; retry shortly")
            )
        except Exception:
            log.exception("unexpected failure while answering stats")
            return error_reply(FlowsError("internal error while answering stats; see the log"))

    async def _report(self, parked_limit: int) -> dict[str, Any]:
        assert self._engine is not None, "not started"
        problems: list[str] = []
        log_end: int | None
        try:
            log_end = await self._event_log().last_position()
        except LogUnavailable as exc:
            log_end = None
            problems.append(f"the event log cannot be read: {exc}")
        async with self._engine.connect() as conn:
            health = await read_projection_health(conn, parked_limit)
        if health.parked_count:
            problems.append(
                f"{health.parked_count} log message(s) on event subjects were parked, not "
                "applied: fix or compensate them (see `parked`), then rebuild the read model"
            )
        return {
            "status": "degraded" if problems else "ok",
            "position": health.position,
            "log_end": log_end,
            # Messages of the log the read model has not applied yet (0 when caught up).
            "lag": None if log_end is None else max(0, log_end - health.position),
            "parked_count": health.parked_count,
            "parked": [parked.as_json() for parked in health.parked],
            "problems": problems,
        }
