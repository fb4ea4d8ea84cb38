"""The follower's window of recent messages: it answers a range only when it holds every message
of it, across gaps in positions, messages read again, and its bound."""

from __future__ import annotations

from events.log import StoredMessage
from projections.recent_messages import RecentMessages


def messages(*positions: int) -> list[StoredMessage]:
    return [StoredMessage("s", b"", position) for position in positions]


def positions(found: list[StoredMessage] | None) -> list[int] | None:
    return None if found is None else [message.position for message in found]


def test_a_range_the_window_holds_is_answered_and_one_it_does_not_is_none() -> None:
    window = RecentMessages(limit=10)
    window.restart(5)
    window.extend(messages(6, 7, 9))  # 8 is a gap in the log
    window.extend(messages(9, 10))  # 9 read again after a reconnect
    assert positions(window.between(5, 10)) == [6, 7, 9, 10]
    assert positions(window.between(7, 9)) == [9]
    assert positions(window.between(7, 8)) == []  # the gap: nothing to replay
    assert window.between(4, 10) is None  # before the follower's start
    assert window.between(6, 11) is None  # past what the follower has read


def test_the_window_keeps_the_newest_messages_within_its_limit() -> None:
    window = RecentMessages(limit=3)
    window.restart(0)
    window.extend(messages(*range(1, 8)))
    assert (window.after, window.until) == (4, 7)
    assert positions(window.between(4, 7)) == [5, 6, 7]
    assert window.between(3, 7) is None
    window.restart(20)  # the follower started again from a snapshot
    assert window.between(4, 7) is None and positions(window.between(20, 20)) == []
