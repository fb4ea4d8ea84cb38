"""The log's most recent messages, as the as-of follower read them, kept for replays.

An as-of model is the nearest snapshot plus the messages after it up to the position asked for.
Those messages were read by the follower (projections/as_of_builder.py) moments or minutes ago:
reading them again from JetStream costs round trips and decoding on the worker's niced CPU.
So the follower keeps a bounded window of what it read, and a replay the window covers takes
its messages from there; anything older is read from the log as before.

The window holds every message of the log in (`after`, `until`], because the follower reads the
log in order and without gaps of its own (a gap in positions is a gap in the log). So what it
returns for a range is exactly what the log would.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque

from events.log import StoredMessage

__all__ = ["RecentMessages"]


class RecentMessages:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._messages: deque[StoredMessage] = deque()
        self.after = 0  # the window holds every message after this position...
        self.until = 0  # ...up to and including this one (after == until: none)

    def restart(self, position: int) -> None:
        """The follower starts anew after `position`: forget what was held."""
        self._messages.clear()
        self.after = self.until = position

    def extend(self, batch: list[StoredMessage]) -> None:
        """The next messages the follower read, in log order; the oldest go past `limit`."""
        for message in batch:
            if message.position <= self.until:
                continue  # read again after a reconnect
            self._messages.append(message)
            self.until = message.position
        while len(self._messages) > self._limit:
            self.after = self._messages.popleft().position

    def between(self, after: int, until: int) -> list[StoredMessage] | None:
        """The log's messages in (`after`, `until`], or None when the window does not hold all
        of them (older than it, or newer than the follower has read)."""
        if after < self.after or until > self.until:
            return None
        first = bisect.bisect_right(self._messages, after, key=_position)
        last = bisect.bisect_right(self._messages, until, key=_position)
        return list(itertools.islice(self._messages, first, last))


def _position(message: StoredMessage) -> int:
    return message.position
