"""Queries that wait for the read model, answered outside the handlers' worker pool.

FastStream gives each subscription a fixed number of handler slots (`FLOWS_MAX_IN_FLIGHT`), and
a handler holds its slot until it returns. A query that must wait for the projector (up to
`Flows-Wait-Ms`, a minute at most) would hold one all that time, so a few hundred waiting
requests from one client could take every slot and delay everyone else's answers. Instead the
handler hands the wait over to a task here and returns at once; the task answers on the
request's reply subject when the wait is over. The number waiting at once is bounded
(`FLOWS_MAX_WAITING`); past it a query is answered 503 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from events.contract.replies import Reply

__all__ = ["Deferred", "Handler", "WaitingReplies"]

log = logging.getLogger(__name__)

Publish = Callable[[str, Reply], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Deferred:
    """A reply that must first wait (for the read model to reach a position). The transport
    answers it outside its handler pool, so that waiting requests never hold the slots other
    requests need."""

    answer: Callable[[], Awaitable[Reply]]


# What the route table maps a subject to: the request's payload and headers in, a reply (now or
# after a wait) out. Handlers never raise: every failure is an error reply (services/failures.py).
Handler = Callable[[bytes, Mapping[str, str]], Awaitable[Reply | Deferred]]


# What `done` is told when no reply could be sent (the service is stopping, NATS is gone).
_UNSENT = Reply(503, error="the reply could not be sent")


class WaitingReplies:
    def __init__(self, limit: int, publish: Publish) -> None:
        self._limit = limit
        self._publish = publish
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def count(self) -> int:
        return len(self._tasks)

    def start(self, reply_subject: str, deferred: Deferred, done: Callable[[Reply], None]) -> bool:
        """Answer `deferred` on `reply_subject` once it is ready, then call `done` with the
        reply. False (and nothing started) when `limit` queries are waiting already."""
        if len(self._tasks) >= self._limit:
            return False
        task = asyncio.create_task(self._answer(reply_subject, deferred, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _answer(
        self, reply_subject: str, deferred: Deferred, done: Callable[[Reply], None]
    ) -> None:
        reply = _UNSENT
        try:
            reply = await deferred.answer()  # never raises: failures are error replies
            await self._publish(reply_subject, reply)
        except Exception:
            log.exception("could not send the reply of a query that waited for the read model")
        finally:
            done(reply)

    async def close(self) -> None:
        """Stop waiting (the service is stopping and has drained what it could)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
