"""Group commit: concurrent appends share one atomic batch, so they share one commit.

nats-server commits atomic batches on a stream one at a time and fsyncs each (with
`sync_interval: always`, every write): a few milliseconds apiece, whatever the concurrency. So
while an append is on its way, the appends that arrive meanwhile wait and then go together as one
atomic batch — all stored or none, every guard checked at commit. With nothing in flight an
append is sent at once: a lone request waits for nobody.

A combined batch that fails a guard says nothing about which append's guard failed, so its
appends are then sent one by one, each as its own atomic append: one command's lost race never
fails another command. An append that is cancelled while queued is never sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from events.log import AppendMessage, WrongExpectedPosition

__all__ = ["GroupCommit"]

Send = Callable[[Sequence[AppendMessage]], Awaitable[int]]


@dataclass(slots=True)
class _Append:
    messages: Sequence[AppendMessage]
    done: asyncio.Future[int]


class GroupCommit:
    """Coalesces appends into atomic batches of at most `max_messages` messages.

    `send` appends one atomic batch and returns the position of its last message; a batch's
    messages take consecutive positions, so each append's own last position follows from it.
    Up to `pipeline` batches are in flight at once (the next fills while one commits).
    """

    def __init__(self, send: Send, max_messages: int, pipeline: int = 2) -> None:
        self._send = send
        self._max_messages = max_messages
        self._pipeline = pipeline
        self._queue: deque[_Append] = deque()
        self._senders: set[asyncio.Task[None]] = set()

    async def append(self, messages: Sequence[AppendMessage]) -> int:
        if len(self._senders) < self._pipeline and not self._queue:
            # Nothing waiting and room in the pipeline: no reason to wait for company.
            return await self._send_counted(messages)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Append(messages, done))
        if len(self._senders) < self._pipeline:
            self._start_sender()
        return await done

    async def _send_counted(self, messages: Sequence[AppendMessage]) -> int:
        # A direct send holds a pipeline slot too, so queued appends know a commit is on its
        # way and wait to ride the next batch.
        marker = asyncio.current_task()
        assert marker is not None
        self._senders.add(marker)
        try:
            return await self._send(messages)
        finally:
            self._senders.discard(marker)
            if self._queue and len(self._senders) < self._pipeline:
                self._start_sender()

    def _start_sender(self) -> None:
        task = asyncio.get_running_loop().create_task(self._drain())
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _drain(self) -> None:
        while self._queue:
            group = self._take_group()
            if group:
                await self._commit(group)

    def _take_group(self) -> list[_Append]:
        group: list[_Append] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if head.done.done():  # cancelled while queued: never sent
                self._queue.popleft()
                continue
            if group and size + len(head.messages) > self._max_messages:
                break
            group.append(self._queue.popleft())
            size += len(head.messages)
        return group

    async def _commit(self, group: list[_Append]) -> None:
        if len(group) == 1:
            await _settle(group[0], self._send(group[0].messages))
            return
        combined = [message for member in group for message in member.messages]
        try:
            last = await self._send(combined)
        except WrongExpectedPosition:
            # Some guard failed; find out whose by sending each on its own, all at once.
            await asyncio.gather(*(_settle(m, self._send(m.messages)) for m in group))
            return
        except BaseException as exc:  # the same outcome for every append of the batch
            for member in group:
                if not member.done.done():
                    member.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        position = last - len(combined)
        for member in group:
            position += len(member.messages)
            if not member.done.done():
                member.done.set_result(position)


async def _settle(member: _Append, sending: Awaitable[int]) -> None:
    try:
        position = await sending
    except Exception as exc:
        if not member.done.done():
            member.done.set_exception(exc)
        return
    if not member.done.done():
        member.done.set_result(position)
