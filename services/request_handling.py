"""What happens to one request between NATS and an operation: the reply-subject check, the
operation, the reply (now, or after a wait outside the worker pool), and the bookkeeping that
lets a stopping service answer everything it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from faststream.nats import NatsMessage, NatsResponse
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from events.contract.replies import Reply
from events.contract.subjects import Subjects
from services.nats_flush import flush_all
from services.reply_policy import RefusedReplies, ReplyPolicy
from services.routes import Route
from services.settings import Settings
from services.waiting import Deferred, WaitingReplies

__all__ = ["RequestHandling"]

log = logging.getLogger(__name__)

# Told of every reply: (subject, operation, reply, time.perf_counter_ns() at its arrival).
Observe = Callable[[str, str, Reply, int], None]
Handler = Callable[[NatsMessage], Awaitable[NatsResponse | None]]

# How long a stopping service waits for requests it already received.
_DRAIN_S = 15.0


class RequestHandling:
    def __init__(
        self,
        settings: Settings,
        connection: Callable[[], NatsClient],
        observe: Observe,
        refused: RefusedReplies,
    ) -> None:
        self._settings = settings
        self._connection = connection
        self._observe = observe
        self._policy = ReplyPolicy(Subjects(settings.subject_prefix), settings.reply_prefixes)
        self.refused = refused
        self._waiting = WaitingReplies(settings.max_waiting, self._publish)
        self._progress = asyncio.Event()  # set whenever a request is answered (or dropped)
        # Each subscription (FastStream's subscriber) with how many of its requests are done.
        self._bound: list[tuple[Any, _Answered]] = []
        self._responders: dict[str, Callable[[Msg], Awaitable[Reply | None]]] = {}

    async def _publish(self, subject: str, reply: Reply) -> None:
        await self._connection().publish(subject, reply.body, headers=reply.headers())

    def handler(self, route: Route, subscriber: Any) -> Handler:
        """FastStream's handler of `route`'s subject: checks the reply subject, runs the
        route's handler, answers (now or after its wait), and counts each request done for
        the drain."""
        respond = self._responder(route, subscriber)

        async def handle(message: NatsMessage) -> NatsResponse | None:
            reply = await respond(message.raw_message)
            if reply is None:
                # Refused, answered later, or nobody to answer: FastStream must not publish.
                message.reply_to = ""
                return None
            return NatsResponse(reply.body, headers=reply.headers())

        return handle

    def serve(self, route: Route, subscriber: Any) -> Callable[[Msg], Awaitable[None]]:
        """The same for a plain nats-py subscription (services/fast_subscriptions.py): answers
        on the request's reply subject itself."""
        respond = self._responder(route, subscriber)
        connection = self._connection

        async def serve(raw: Msg) -> None:
            reply = await respond(raw)
            if reply is not None and raw.reply:
                await connection().publish(raw.reply, reply.body, headers=reply.headers())

        return serve

    def _responder(self, route: Route, subscriber: Any) -> Callable[[Msg], Awaitable[Reply | None]]:
        """What both transports do with one request: the reply to send now, or None (refused:
        not executed; or answered later by a waiting task). Counts it done for the drain."""
        subject = route.subject(self._settings.subject_prefix)
        if subject in self._responders:  # one count of answered requests per subscription
            return self._responders[subject]
        operation_name = route.operation
        answered = _Answered()
        self._bound.append((subscriber, answered))

        def finished() -> None:
            answered.count += 1
            self._progress.set()

        async def respond(raw: Msg) -> Reply | None:
            started = time.perf_counter_ns()
            answers_later = False
            try:
                refusal = self._policy.refusal(raw.reply)
                if refusal is not None:
                    # Not executed, not answered.
                    self.refused.record(subject, raw.reply, refusal, raw.headers)
                    return None
                outcome = await route.handler(raw.data, raw.headers or {})
                if isinstance(outcome, Deferred):
                    if not raw.reply:  # nobody to answer: no reason to wait
                        return None

                    def answered_later(reply: Reply) -> None:
                        self._observe(subject, operation_name, reply, started)
                        finished()

                    answers_later = self._waiting.start(raw.reply, outcome, answered_later)
                    if answers_later:
                        return None  # the waiting task answers instead
                    outcome = _too_many_waiting(self._settings.max_waiting)
                self._observe(subject, operation_name, outcome, started)
                return outcome
            finally:
                if not answers_later:
                    finished()

        self._responders[subject] = respond
        return respond

    def reply_allowed(self, msg: Msg) -> bool:
        """For subscriptions outside FastStream (discovery): the same reply-subject check."""
        refusal = self._policy.refusal(msg.reply)
        if refusal is not None:
            self.refused.record(msg.subject, msg.reply, refusal, msg.headers)
        return refusal is None

    async def drain(self) -> None:
        """Answer every request that reached this process before stopping.

        FastStream's own stop drops requests still queued inside the process (it only waits for
        handlers already running), so first unsubscribe at the server — the queue group sends
        new requests to other instances — then wait until each subscription has answered as
        many requests as it was delivered (waiting queries included).
        """
        subscriptions = [(s.subscription, n) for s, n in self._bound if s.subscription]
        if not subscriptions:  # stopped before the broker subscribed (or connected)
            await self._waiting.close()
            return
        connection = self._connection()
        for subscription, _ in subscriptions:
            # nats-py's public drain() would close the subscription under FastStream, whose
            # own stop then fails to unsubscribe it: send just the UNSUB.
            with contextlib.suppress(Exception):
                await connection._send_unsubscribe(subscription._id)
        with contextlib.suppress(Exception):
            await flush_all(connection)  # the server has sent all it will send us

        def unanswered() -> int:
            return sum(sub.delivered - answered.count for sub, answered in subscriptions)

        try:
            async with asyncio.timeout(_DRAIN_S):
                while unanswered() > 0:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            log.warning("stopping with %d requests unanswered after %.0fs", unanswered(), _DRAIN_S)
        else:
            log.info("answered every request received; stopping")
        await self._waiting.close()


def _too_many_waiting(limit: int) -> Reply:
    detail = (
        f"{limit} queries are already waiting for the read model to reach their position "
        "(FLOWS_MAX_WAITING); retry shortly"
    )
    return Reply(503, orjson.dumps({"detail": detail}), error=detail)


class _Answered:
    """How many requests one subscription's handler has finished (answered or not)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0
