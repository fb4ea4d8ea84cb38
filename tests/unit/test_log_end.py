"""The log-end look-up (projections/log_end.py): shared by every caller, never stale for one."""

from __future__ import annotations

import asyncio

import pytest

from projections.log_end import LogEnd


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
