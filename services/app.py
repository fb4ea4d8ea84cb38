"""The FastStream application factory: subscribers for every subject of the contract."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage, NatsResponse

from events.subjects import AUDITS, COMMANDS, QUERIES
from services.replies import Reply
from services.runtime import Runtime
from services.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

Operation = Callable[[bytes, Mapping[str, str]], Awaitable[Reply]]


async def _raw(message: NatsMessage) -> NatsMessage:
    # Handlers parse the payload themselves (with Prefect's error shapes): skip FastStream's
    # decoding and dependency injection on the hot path.
    return message


def create_app(settings: Settings) -> FastStream:
    broker = NatsBroker(
        settings.nats_url,
        apply_types=False,
        # FastStream's two INFO lines per message halve throughput; the service logs what
        # matters itself.
        logger=None,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        name="flows-service",
        graceful_timeout=15.0,
    )
    runtime = Runtime(settings)
    subjects = runtime.subjects

    def bind(subject: str, operation_name: str) -> None:
        async def handle(message: NatsMessage) -> NatsResponse:
            raw = message.raw_message
            operations = runtime.operations
            if operations is None:  # not started, or stopping
                reply = Reply(503, b'{"detail":"the flows service is starting"}', error="starting")
            else:
                operation: Operation = getattr(operations, operation_name)
                reply = await operation(raw.data, raw.headers or {})
            return NatsResponse(reply.body, headers=reply.headers())

        broker.subscriber(
            subject,
            queue=settings.queue_group,
            max_workers=settings.max_in_flight,
            decoder=_raw,
        )(handle)

    for name in COMMANDS:
        bind(subjects.command(name), name)
    for name in QUERIES:
        bind(subjects.query(name), name)
    for name in AUDITS:
        bind(subjects.audit(name), name)

    async def subscribed() -> None:
        # nats-py only queues SUB commands: one round trip makes sure the server knows every
        # subscription before start-up returns, so no early request finds no responders.
        await broker.connection.flush()
        log.info(
            "flows service ready on %s.{cmd,query,audit}.* (queue group %s)",
            settings.subject_prefix,
            settings.queue_group,
        )

    app = FastStream(broker, logger=log)
    app.on_startup(runtime.start)
    app.after_startup(subscribed)
    app.after_shutdown(runtime.stop)
    return app
