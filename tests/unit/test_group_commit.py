"""Group commit against a fake log: batches form while one commits, and no append is ever left
waiting with nobody to send it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from events.group_commit import GroupCommit
from events.log import AppendMessage


class _Log:
    """A send whose answers the test releases one batch at a time."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.position = 0
        self.release: asyncio.Queue[None] = asyncio.Queue()

    async def send(self, messages: Sequence[AppendMessage]) -> int:
        self.batches.append([m.subject for m in messages])
        await self.release.get()
        self.position += len(messages)
        return self.position


def _append(subject: str) -> list[AppendMessage]:
    return [AppendMessage(subject, b"e", 0), AppendMessage(f"{subject}.marker", b"m", 0)]


async def _until(condition: object) -> None:
    """Let the loop run until `condition()` holds (each step is one pass of the loop)."""
    for _ in range(1000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_what_arrives_while_a_batch_commits_goes_as_the_next_single_batch() -> None:
    log = _Log()
    group = GroupCommit(log.send, max_messages=1000)
    first = asyncio.ensure_future(group.append(_append("a")))
    await _until(lambda: len(log.batches) == 1)
    rest = [asyncio.ensure_future(group.append(_append(s))) for s in "bcde"]
    await _until(lambda: all(not t.done() for t in rest))
    assert len(log.batches) == 1  # one batch in flight: the others wait for it
    log.release.put_nowait(None)
    assert await first == 2
    await _until(lambda: len(log.batches) == 2)
    assert log.batches[1] == [m.subject for s in "bcde" for m in _append(s)]
    log.release.put_nowait(None)
    assert await asyncio.gather(*rest) == [4, 6, 8, 10]


async def test_an_append_made_as_a_batch_is_answered_is_sent() -> None:
    # The caller of a batched append appends again the moment it is answered, in the same
    # step of the loop, before the sender's own task has finished: that append must be sent,
    # not left queued with nobody to send it.
    log = _Log()
    group = GroupCommit(log.send, max_messages=1000)

    async def append_then_append_again() -> tuple[int, int]:
        position = await group.append(_append("b"))
        return position, await group.append(_append("c"))

    first = asyncio.ensure_future(group.append(_append("a")))
    await _until(lambda: len(log.batches) == 1)
    second = asyncio.ensure_future(append_then_append_again())
    await _until(lambda: not second.done())
    log.release.put_nowait(None)  # a: sent at once
    await _until(lambda: len(log.batches) == 2)
    log.release.put_nowait(None)  # b: batched
    assert await first == 2
    await _until(lambda: len(log.batches) == 3)
    log.release.put_nowait(None)
    assert await second == (4, 6)


async def test_an_append_cancelled_while_queued_is_never_sent() -> None:
    log = _Log()
    group = GroupCommit(log.send, max_messages=1000)
    first = asyncio.ensure_future(group.append(_append("a")))
    await _until(lambda: len(log.batches) == 1)
    cancelled = asyncio.ensure_future(group.append(_append("x")))
    kept = asyncio.ensure_future(group.append(_append("b")))
    await _until(lambda: not kept.done())
    cancelled.cancel()
    log.release.put_nowait(None)
    await first
    await _until(lambda: len(log.batches) == 2)
    assert log.batches[1] == [m.subject for m in _append("b")]
    log.release.put_nowait(None)
    assert await kept == 4
