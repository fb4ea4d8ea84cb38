"""Request subjects served from plain nats-py queue subscriptions, past FastStream's per-message
machinery.

FastStream runs each message through an anyio stream, a task group, a semaphore taken twice, a
context scope, its acknowledgement and logging middlewares, its parser and decoder, a handler
call wrapper and a response publisher: about as much CPU as a whole SQLite read
(docs/profiles.md). Here a message goes from nats-py's callback to a task running the same
request handling (services/request_handling.py: reply policy, route, reply, metrics, drain
accounting), at most `max_in_flight` at once per subject, as FastStream's `max_workers`.

FastStream keeps the app's structure: its subscriber of each subject is still declared (the
AsyncAPI document, the in-process test broker, its stop unsubscribing), but is handed this
subscription before the broker starts, so FastStream does not open one of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Serve", "subscribe"]

log = logging.getLogger(__name__)

# Answers one request (and publishes its reply); expected never to raise.
Serve = Callable[[Msg], Awaitable[None]]


async def subscribe(
    connection: NatsClient, subject: str, queue: str, serve: Serve, max_in_flight: int
) -> Subscription:
    """A queue subscription of `subject` whose messages are each answered by `serve`, in a task
    of its own, at most `max_in_flight` at once."""
    dispatch = _Dispatch(serve, max_in_flight)
    return await connection.subscribe(subject, queue=queue, cb=dispatch.deliver)


class _Dispatch:
    """nats-py's callback: awaits each message in turn, so it only starts a task per message
    (waiting for a free slot past `max_in_flight`, which leaves the rest queued in nats-py, as
    FastStream's workers do)."""

    __slots__ = ("_running", "_serve", "_slots")

    def __init__(self, serve: Serve, max_in_flight: int) -> None:
        self._serve = serve
        self._slots = asyncio.Semaphore(max_in_flight)
        self._running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def deliver(self, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._run(msg))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, msg: Msg) -> None:
        try:
            await self._serve(msg)
        except Exception:
            # What FastStream's CriticalLogMiddleware did: say so, keep serving.
            log.exception("request on %s failed without a reply", msg.subject)
        finally:
            self._slots.release()
