"""Points in the log's history, as people name them: a log position, or a moment in time.

A moment means "everything the log had stored by then": the last position whose JetStream
timestamp is at or before it. JetStream stamps messages in position order, so a binary search
over positions finds it with about log2(N) one-message reads (17 for 100k messages), through
the `EventLog` protocol alone.
"""

from __future__ import annotations

from datetime import datetime

from events.log import EventLog
from events.timefmt import parse_datetime

__all__ = ["LogPoint", "parse_log_point", "position_at", "resolve_point"]

LogPoint = int | datetime


def parse_log_point(text: str) -> LogPoint:
    """`123` (a position, >= 0) or an ISO 8601 timestamp (naive means UTC).

    Raises ValueError, with a message fit for the requester, for anything else.
    """
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    if raw.startswith("-") and raw[1:].isdigit():
        raise ValueError(f"a log position is >= 0, got {text!r}")
    try:
        return parse_datetime(raw)
    except ValueError:
        raise ValueError(
            f"expected a log position (an integer >= 0) or an ISO 8601 timestamp such as "
            f"2026-01-31T12:00:00Z, got {text!r}"
        ) from None


async def position_at(event_log: EventLog, when: datetime, *, inclusive: bool = True) -> int:
    """The last position stored at or before `when` (strictly before if not `inclusive`);
    0 when the log holds nothing that old."""

    def before(moment: datetime | None) -> bool:
        if moment is None:  # a log without timestamps cannot place the message: after
            return False
        return moment <= when if inclusive else moment < when

    last = await event_log.last_position()
    if last == 0:
        return 0
    newest = await event_log.read(last - 1, 1)
    if newest and before(newest[0].time):
        return newest[0].position
    low, high = 0, last  # before(low) holds (0 is "nothing"), before(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        found = await event_log.read(middle - 1, 1)
        if not found or found[0].position >= high:
            high = middle  # no message in [middle, high): nothing there is before `when`
        elif before(found[0].time):
            low = found[0].position
        else:
            high = middle
    return low


async def resolve_point(event_log: EventLog, point: LogPoint) -> int:
    """The position a point names (a position is itself)."""
    if isinstance(point, datetime):
        return await position_at(event_log, point)
    return point
