"""The FastStream application factory: subscribers for every subject of the contract."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage
from nats.aio.client import Client as NatsClient

from events.contract.replies import Reply
from events.log import EventLog
from services import fast_subscriptions
from services.asyncapi import describe_request
from services.bootstrap import Service
from services.command_handlers import CommandHandlers
from services.discovery import Discovery
from services.metrics import Metrics
from services.metrics_server import MetricsServer
from services.nats_flush import flush_all
from services.nats_options import ServerChoice, broker_security, inbox_prefix
from services.query_handlers import QueryHandlers
from services.reply_policy import RefusedReplies
from services.request_handling import RequestHandling
from services.routes import Route, route_table
from services.seeds import seed_urls
from services.settings import Settings, redact_url
from services.stats import HealthReporter

__all__ = ["create_app"]

log = logging.getLogger(__name__)


async def _raw(message: NatsMessage) -> NatsMessage:
    # Handlers parse the payload themselves (with Prefect's error shapes): skip FastStream's
    # decoding and dependency injection on the hot path.
    return message


def _connection_logging(
    settings: Settings, closed: Callable[[], bool], reconnected: Callable[[], None]
) -> dict[str, Any]:
    """Callbacks that say in the log when the request connection drops and comes back: while
    it is down the service has no subscriptions, and requesters get NATS's no-responders."""
    where = redact_url(settings.nats_url)

    async def on_error(error: Exception) -> None:
        log.warning("NATS request connection at %s: %s", where, error or repr(error))

    async def on_disconnect() -> None:
        if not closed():  # not our own close at shutdown
            log.warning("NATS request connection lost; reconnecting to %s", where)

    async def on_reconnect() -> None:
        reconnected()
        log.info("NATS request connection re-established; subscriptions restored")

    return {
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
    }


def create_app(settings: Settings, *, event_log: EventLog | None = None) -> FastStream:
    """The service's app. `event_log` replaces the JetStream log, for tests that run the app
    in-process (FastStream's TestNatsBroker on events/memory_log.py): see `Service`."""
    # The server just lost is tried last: a hung one would cost a whole connect timeout.
    choice = ServerChoice(reconnect_time_wait_s=1)
    broker = NatsBroker(
        seed_urls(settings.nats_url),  # one URL or a cluster's seed list
        apply_types=False,
        # FastStream's two INFO lines per message halve throughput; the service logs what
        # matters itself.
        logger=None,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        reconnect_to_server_handler=choice,
        # A hung server is left after ~2 intervals (Settings.nats_ping_interval_s).
        ping_interval=settings.nats_ping_interval_s,  # type: ignore[arg-type]  # used as a float
        max_outstanding_pings=2,
        name="flows-service",
        graceful_timeout=15.0,
        # The authentication and TLS of the role that answers requests (nats_options.py).
        security=broker_security(settings),
        inbox_prefix=inbox_prefix(settings),
        # `broker` is bound by the time NATS calls back.
        **_connection_logging(
            settings,
            lambda: broker.connection.is_closed,
            lambda: choice.connected_to(broker.connection),
        ),
    )
    service = Service(settings, event_log)
    discovery = Discovery(settings, lambda: service.projector_role)

    refused = RefusedReplies()
    health = HealthReporter(service, refused)
    metrics: Metrics | None = None
    http: MetricsServer | None = None
    if settings.metrics_addr:
        metrics = Metrics(service, health)
        # Built here, so that an unusable address stops the service before it starts.
        http = MetricsServer(metrics, settings.metrics_addr)

    def observe(subject: str, operation: str, reply: Reply, started_ns: int) -> None:
        discovery.record(subject, reply.status, reply.error, started_ns)
        if metrics is not None:
            metrics.observe(operation, reply.status, started_ns)

    requests = RequestHandling(settings, lambda: broker.connection, observe, refused)
    routes = route_table(
        CommandHandlers(service.started),
        QueryHandlers(service.started),
        health,
        settings.default_limit,
    )
    # Each route with its FastStream subscriber, which serve_directly() hands a plain nats-py
    # subscription of the same subject and queue group.
    subscribers: list[tuple[Route, Any]] = []
    for route in routes:
        subject = route.subject(settings.subject_prefix)
        subscriber = broker.subscriber(
            subject,
            queue=settings.queue_group,
            max_workers=settings.max_in_flight,
            decoder=_raw,
            title=subject,
        )
        handler = requests.handler(route, subscriber)
        describe_request(handler, route.operation)  # for the AsyncAPI document
        subscriber(handler)
        subscribers.append((route, subscriber))
        discovery.add_endpoint(route.operation, subject)

    async def serve_directly() -> None:
        # Before the broker starts its subscribers: FastStream opens no subscription of its
        # own for a subscriber that has one. Not on FastStream's in-process test broker,
        # whose stand-in connection is no nats-py client: it calls the subscribers itself.
        connection = await broker.connect()
        if not isinstance(connection, NatsClient):
            return
        for route, subscriber in subscribers:
            subscriber.subscription = await fast_subscriptions.subscribe(
                connection,
                route.subject(settings.subject_prefix),
                settings.queue_group,
                requests.serve(route, subscriber),
                settings.max_in_flight,
            )

    control: list[Any] = []  # the discovery subscriptions ($SRV.*)

    async def subscribed() -> None:
        answer = discovery.handler(requests.reply_allowed)
        for subject in discovery.control_subjects():
            control.append(await broker.connection.subscribe(subject, cb=answer))
        # nats-py only queues SUB commands: make sure the server knows every subscription
        # before start-up returns, so no early request finds no responders.
        await flush_all(broker.connection)
        choice.connected_to(broker.connection)
        log.info(
            "flows service ready on %s.{cmd,query,audit}.* (queue group %s)",
            settings.subject_prefix,
            settings.queue_group,
        )

    app = FastStream(broker, logger=log)
    app.on_startup(service.start)
    app.on_startup(serve_directly)  # after start: a request may arrive as soon as it returns
    app.after_startup(subscribed)
    if http is not None:
        app.after_startup(http.start)
        app.after_shutdown(http.stop)

    async def stop_answering() -> None:
        # Out of discovery first (a stopping instance is no longer one to find), then drain.
        for subscription in control:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        await requests.drain()

    app.on_shutdown(stop_answering)
    app.after_shutdown(service.stop)
    return app
