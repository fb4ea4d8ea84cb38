"""The FastStream application factory: subscribers for every subject of the contract."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage, NatsResponse

from events.subjects import AUDITS, COMMANDS, HEALTH, QUERIES
from services.health import HealthReporter
from services.nats_options import broker_security
from services.replies import Reply
from services.runtime import Runtime
from services.seeds import seed_urls
from services.settings import Settings, redact_url

__all__ = ["create_app"]

log = logging.getLogger(__name__)

Operation = Callable[[bytes, Mapping[str, str]], Awaitable[Reply]]

# How long a stopping service waits for requests it already received.
_DRAIN_S = 15.0


async def _raw(message: NatsMessage) -> NatsMessage:
    # Handlers parse the payload themselves (with Prefect's error shapes): skip FastStream's
    # decoding and dependency injection on the hot path.
    return message


def _connection_logging(settings: Settings, closed: Callable[[], bool]) -> dict[str, Any]:
    """Callbacks that say in the log when the request connection drops and comes back: while
    it is down the service has no subscriptions, and requesters get NATS's no-responders."""
    where = redact_url(settings.nats_url)

    async def on_error(error: Exception) -> None:
        log.warning("NATS request connection at %s: %s", where, error or repr(error))

    async def on_disconnect() -> None:
        if not closed():  # not our own close at shutdown
            log.warning("NATS request connection lost; reconnecting to %s", where)

    async def on_reconnect() -> None:
        log.info("NATS request connection re-established; subscriptions restored")

    return {
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
    }


def create_app(settings: Settings) -> FastStream:
    broker = NatsBroker(
        seed_urls(settings.nats_url),  # one URL or a cluster's seed list
        apply_types=False,
        # FastStream's two INFO lines per message halve throughput; the service logs what
        # matters itself.
        logger=None,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        name="flows-service",
        graceful_timeout=15.0,
        # The same authentication and TLS as the service's other connections.
        security=broker_security(settings),
        # `broker` is bound by the time NATS calls back.
        **_connection_logging(settings, lambda: broker.connection.is_closed),
    )
    # The health reporter reads the read model and the log by itself (services/health.py).
    runtime, health = Runtime(settings), HealthReporter(settings, lambda: broker.connection)
    progress = asyncio.Event()  # set whenever a handler finishes
    subjects = runtime.subjects

    bound: list[tuple[Any, _Answered]] = []

    def bind(
        subject: str, operation_name: str, owner: Callable[[], object | None] | None = None
    ) -> None:
        answered = _Answered()

        async def handle(message: NatsMessage) -> NatsResponse:
            try:
                raw = message.raw_message
                operations = runtime.operations if owner is None else owner()
                if operations is None:  # not started, or stopping
                    reply = Reply(
                        503, b'{"detail":"the flows service is starting"}', error="starting"
                    )
                else:
                    operation: Operation = getattr(operations, operation_name)
                    reply = await operation(raw.data, raw.headers or {})
                return NatsResponse(reply.body, headers=reply.headers())
            finally:
                answered.count += 1
                progress.set()

        subscriber = broker.subscriber(
            subject,
            queue=settings.queue_group,
            max_workers=settings.max_in_flight,
            decoder=_raw,
        )
        subscriber(handle)
        bound.append((subscriber, answered))

    for name in COMMANDS:
        bind(subjects.command(name), name)
    for name in QUERIES:
        bind(subjects.query(name), name)
    for name in AUDITS + HEALTH:
        bind(subjects.audit(name), name, health.ready if name in HEALTH else None)

    async def subscribed() -> None:
        # nats-py only queues SUB commands: one round trip makes sure the server knows every
        # subscription before start-up returns, so no early request finds no responders.
        await broker.connection.flush()
        log.info(
            "flows service ready on %s.{cmd,query,audit}.* (queue group %s)",
            settings.subject_prefix,
            settings.queue_group,
        )

    async def drain() -> None:
        """Answer every request that reached this process before stopping.

        FastStream's own stop drops requests still queued inside the process (it only waits for
        handlers already running), so first unsubscribe at the server — the queue group sends
        new requests to other instances — then wait until each subscription has answered as
        many requests as it was delivered.
        """
        subscriptions = [(s.subscription, answered) for s, answered in bound if s.subscription]
        for subscription, _ in subscriptions:
            # nats-py's public drain() would close the subscription under FastStream, whose
            # own stop then fails to unsubscribe it: send just the UNSUB.
            with contextlib.suppress(Exception):
                await broker.connection._send_unsubscribe(subscription._id)
        with contextlib.suppress(Exception):
            await broker.connection.flush()  # the server has sent all it will send us

        def unanswered() -> int:
            return sum(sub.delivered - answered.count for sub, answered in subscriptions)

        try:
            async with asyncio.timeout(_DRAIN_S):
                while unanswered() > 0:
                    progress.clear()
                    await progress.wait()
        except TimeoutError:
            log.warning("stopping with %d requests unanswered after %.0fs", unanswered(), _DRAIN_S)
            return
        log.info("answered every request received; stopping")

    # The health reporter opens its engine as the app starts and disposes of it as it stops.
    app = FastStream(broker, logger=log, on_startup=[health.start], after_shutdown=[health.stop])
    app.on_startup(runtime.start)
    app.after_startup(subscribed)
    app.on_shutdown(drain)
    app.after_shutdown(runtime.stop)
    return app


class _Answered:
    """How many requests one subscription's handler has finished (answered or not)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0
