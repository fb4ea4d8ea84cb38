"""Read-ahead (events/paging.py): the next page is asked for while the caller holds this one,
and a caller that stops early leaves no read behind. What the pages hold is the contract
suite's (tests/integration/test_event_log_contract.py)."""

from __future__ import annotations

import asyncio
import contextlib

from events.log import StoredMessage
from events.paging import read_ahead


class _Log:
    def __init__(self, size: int) -> None:
        self.size = size
        self.asked: list[tuple[int, int]] = []
        self.cancelled = 0

    async def read_page(self, after: int, limit: int) -> list[StoredMessage]:
        self.asked.append((after, limit))
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        last = min(after + limit, self.size)
        return [StoredMessage("s", b"", position) for position in range(after + 1, last + 1)]


async def test_the_next_page_is_asked_for_before_the_caller_takes_it() -> None:
    log = _Log(5)
    pages = read_ahead(log.read_page, 0, None, 2)
    first = await anext(pages)
    assert [m.position for m in first] == [1, 2]
    await asyncio.sleep(0)  # the caller at work on the page, giving the loop a turn
    assert log.asked == [(0, 2), (2, 2)]  # the second page is on its way already
    rest = [[m.position for m in page] async for page in pages]
    assert rest == [[3, 4], [5]]
    assert log.asked == [(0, 2), (2, 2), (4, 2)]  # a short page is the end: nothing after it


async def test_until_bounds_what_is_asked_for() -> None:
    log = _Log(100)
    pages = [[m.position for m in page] async for page in read_ahead(log.read_page, 0, 5, 3)]
    assert pages == [[1, 2, 3], [4, 5]]
    assert log.asked == [(0, 3), (3, 2)]


async def test_a_caller_that_stops_early_cancels_the_read_ahead() -> None:
    log = _Log(10)
    pages = read_ahead(log.read_page, 0, None, 2)
    async with contextlib.aclosing(pages):
        async for _ in pages:
            await asyncio.sleep(0)  # the next read is in flight
            break
    await asyncio.sleep(0)  # the cancelled read sees its cancellation at its next turn
    assert log.cancelled == 1
