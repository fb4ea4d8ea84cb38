"""`P.audit.stats`: the service's health — how far the read model has applied the log, how far
the log goes, and every log message the projector parked instead of applying.

A parked message (malformed JSON, an unknown event type, a payload of the wrong shape on
`P.events.<id>`) is never silently skipped: it makes the status "degraded" until an operator
deals with it, and `flows stats` shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from events.contract.audit import parse_stats
from events.contract.bodies import load_json_body
from events.contract.errors import LogUnavailable
from events.contract.replies import Reply, json_reply
from projections.model_health import read_projection_health
from services.bootstrap import Service
from services.failures import failure_reply
from services.reply_policy import RefusedReplies

__all__ = ["HealthReporter"]

log = logging.getLogger(__name__)


class HealthReporter:
    """Answers `stats` from the read model's database, the log's stream info (through the
    service's log, the one connection allowed to call the JetStream API) and the count of
    requests refused for their reply subject. It answers from the moment the app subscribes,
    while start-up may still be waiting for the log or the database: then it says so.
    """

    def __init__(self, service: Service, refused: RefusedReplies) -> None:
        self._service = service
        self._refused = refused

    async def stats(self, payload: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            request = parse_stats(load_json_body(payload))
            return json_reply(200, await self.report(request.parked_limit))
        except Exception as error:
            return failure_reply(error, "stats request")

    async def report(self, parked_limit: int = 0) -> dict[str, Any]:
        """The health report `stats` answers with (also read by metrics and /healthz)."""
        problems: list[str] = []
        log_end: int | None = None
        event_log = self._service.event_log
        if event_log is None:
            problems.append("the service is still connecting to its event log")
        else:
            try:
                log_end = await event_log.last_position()
            except LogUnavailable as exc:
                problems.append(f"the event log cannot be read: {exc}")
        async with self._service.engine.connect() as conn:
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
            # "leader"/"follower" on a shared PostgreSQL model (one instance projects at a
            # time), "local" for this instance's own SQLite model.
            "projector": self._service.projector_role,
            "parked_count": health.parked_count,
            "parked": [parked.as_json() for parked in health.parked],
            "problems": problems,
            # Requests not executed because their reply subject was one the service never
            # answers on (services/reply_policy.py), by subject: someone is probing.
            "refused_requests": dict(self._refused.by_subject),
        }
