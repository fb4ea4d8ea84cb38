"""The log-end look-up (projections/log_end.py): shared by every caller, never stale for one,
never below a position known to exist."""

from __future__ import annotations

import asyncio

import pytest

from events.contract.errors import InvalidRequest, LogEndBehind
from events.contract.headers import CONSISTENCY, MIN_POSITION
from projections.log_end import LogEnd
from projections.position_watcher import PositionWatcher
from services.consistency import ReadPositions


class Stream:
    """A log whose end a test moves, counting look-ups; each look-up waits for `release`."""

    def __init__(self) -> None:
        self.end = 10
        self.lookups = 0
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def lookup(self) -> int:
        self.lookups += 1
        seen = self.end  # the end as the look-up is sent
        self.started.set()
        await self.release.wait()
        return seen


async def test_many_callers_at_once_share_one_lookup() -> None:
    stream = Stream()
    log_end = LogEnd(stream.lookup)
    callers = [asyncio.create_task(log_end.fresh()) for _ in range(300)]
    await stream.started.wait()
    stream.release.set()
    assert await asyncio.gather(*callers) == [10] * 300
    assert stream.lookups == 1
    assert log_end.known == 10


async def test_a_caller_arriving_during_a_lookup_waits_for_the_next_one() -> None:
    """The look-up in flight was sent before the caller arrived: its answer may miss a
    position handed out meanwhile, so the caller gets the one after it."""
    stream = Stream()
    log_end = LogEnd(stream.lookup)
    early = asyncio.create_task(log_end.fresh())
    await stream.started.wait()
    stream.end = 12  # a command appended while the first look-up was on its way
    late = [asyncio.create_task(log_end.fresh()) for _ in range(50)]
    await asyncio.sleep(0)  # let them queue behind the first look-up
    stream.release.set()
    assert await early == 10
    assert await asyncio.gather(*late) == [12] * 50
    assert stream.lookups == 2


async def test_known_positions_need_no_lookup_and_never_move_back() -> None:
    stream = Stream()
    log_end = LogEnd(stream.lookup)
    log_end.saw(40)
    log_end.saw(30)
    assert log_end.known == 40
    assert stream.lookups == 0


async def test_a_failed_lookup_fails_its_callers_and_the_next_one_tries_again() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("JetStream did not answer")
        return 7

    log_end = LogEnd(flaky)
    with pytest.raises(ConnectionError):
        await log_end.fresh()
    assert await log_end.fresh() == 7


class Answers:
    """A look-up that answers from a list, one answer per look-up (the last one repeated)."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def lookup(self) -> int:
        self.lookups += 1
        return self.answers[min(self.lookups, len(self.answers)) - 1]


async def test_an_answer_below_a_known_position_is_asked_again() -> None:
    """A server with stale state (a deposed leader, not yet told) said 71 where 720 exists."""
    answers = Answers(71, 71, 725)
    log_end = LogEnd(answers.lookup, stale_retry_delays_s=(0, 0, 0))
    log_end.saw(720)
    assert await log_end.fresh() == 725
    assert answers.lookups == 3
    assert log_end.known == 725


async def test_an_end_below_a_known_position_every_time_is_retryable_never_used() -> None:
    answers = Answers(71)
    log_end = LogEnd(answers.lookup, stale_retry_delays_s=(0, 0))
    log_end.saw(720)
    with pytest.raises(LogEndBehind) as raised:
        await log_end.fresh()
    assert raised.value.status == 503
    assert answers.lookups == 3  # the first answer and one per retry
    assert log_end.known == 720  # the stale answer moved nothing back


async def test_an_answer_at_or_above_everything_known_is_taken_at_once() -> None:
    answers = Answers(720, 800)
    log_end = LogEnd(answers.lookup, stale_retry_delays_s=(0, 0))
    log_end.saw(720)
    assert await log_end.fresh() == 720
    assert answers.lookups == 1


class TestReadIndex:
    """services/consistency.py on top of LogEnd: what a query waits for, or why not."""

    @staticmethod
    def positions(answers: Answers, seen: int) -> ReadPositions:
        log_end = LogEnd(answers.lookup, stale_retry_delays_s=(0, 0))
        log_end.saw(seen)  # e.g. a command this instance answered, or its projector's progress
        return ReadPositions(PositionWatcher(), log_end, start=0)

    async def test_a_stale_end_below_the_clients_known_position_is_503_not_422(self) -> None:
        """The client's position exists (this instance has seen it): refusing it as beyond the
        log would tell the client its own write does not exist."""
        positions = self.positions(Answers(71), seen=720)
        with pytest.raises(LogEndBehind) as raised:
            await positions.wanted({MIN_POSITION: "720"})
        assert raised.value.status == 503

    async def test_a_linearizable_read_never_takes_a_stale_index(self) -> None:
        positions = self.positions(Answers(71, 730), seen=720)
        assert await positions.wanted({}) == 730

    async def test_a_position_beyond_anything_ever_seen_is_still_refused(self) -> None:
        positions = self.positions(Answers(730), seen=720)
        with pytest.raises(InvalidRequest) as raised:
            await positions.wanted({MIN_POSITION: "900"})
        assert raised.value.status == 422

    async def test_eventual_reads_ask_nothing_of_the_log(self) -> None:
        answers = Answers(71)
        positions = self.positions(answers, seen=720)
        assert await positions.wanted({MIN_POSITION: "700", CONSISTENCY: "eventual"}) == 700
        assert answers.lookups == 0
