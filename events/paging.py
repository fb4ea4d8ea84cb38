"""Paging through the log, the one way every reader does it: `EventLog.pages`.

Both backends hand `read_ahead` their one-request read, so they page alike: pages of up to
`max_batch` messages after a position, up to `until` (inclusive), to the log's end as it was
when the last page was read. While the caller works on one page the next is already being
read, so a reader that writes what it reads (a rebuild, a replay into SQLite) overlaps the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

from events.log import StoredMessage

__all__ = ["ReadPage", "read_ahead"]

# One request to the log: up to `limit` messages with position > after, in log order; fewer
# only at the log's end.
ReadPage = Callable[[int, int], Awaitable[list[StoredMessage]]]


async def read_ahead(
    read_page: ReadPage, after: int, until: int | None, max_batch: int
) -> AsyncGenerator[list[StoredMessage], None]:
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    ahead: asyncio.Future[list[StoredMessage]] | None = None
    want = _wanted(after, until, max_batch)
    try:
        reading: asyncio.Future[list[StoredMessage]] | None = None
        if want:
            reading = asyncio.ensure_future(read_page(after, want))
        while reading is not None:
            found = await reading
            page = found if until is None else [m for m in found if m.position <= until]
            # A short page is the log's end; a page cut at `until`, the end the caller asked.
            if len(found) == want and len(page) == len(found):
                after = page[-1].position
                want = _wanted(after, until, max_batch)
                if want:
                    ahead = asyncio.ensure_future(read_page(after, want))
            if page:
                yield page
            reading, ahead = ahead, None
    finally:
        # A caller that stops early (break, an exception) leaves a read in flight: drop it.
        if ahead is not None and not ahead.cancel() and not ahead.cancelled():
            ahead.exception()  # already failed: retrieved, so asyncio does not report it lost


def _wanted(after: int, until: int | None, max_batch: int) -> int:
    return max_batch if until is None else max(0, min(max_batch, until - after))
