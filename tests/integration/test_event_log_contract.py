"""The event log's contract, held against both backends: the in-memory log the unit tests use
and the JetStream log on a real nats-server. A behaviour the service relies on belongs here, so
the in-memory log cannot drift from JetStream's semantics unnoticed.

Not in the contract: deduplication (the log takes no message ids; retried commands are made
exact by stored replies, guarded like any append: see events/writer.py). JetStream-only
behaviour (stream settings, server limits on open batches) is in test_jetstream_log.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, StreamSettings
from events.log import AppendMessage, EventLog, StoredMessage, WrongExpectedPosition
from events.memory_log import InMemoryLog
from events.raw_delivery import RawSubscriptions
from services.embedded import EmbeddedNats


@dataclass(frozen=True)
class Backend:
    log: EventLog
    subjects: Subjects

    async def fill(self, count: int, flow: str = "f") -> None:
        """`count` single-message appends of events of one flow, data b"0", b"1", ..."""
        for number in range(count):
            await self.log.append([AppendMessage(self.subjects.event(flow), str(number).encode())])

    async def interleave(self) -> None:
        """Five appends of an event (flows "b", "a" by turns, data b"0".."4") and a name
        marker each: events at positions 1, 3, 5, 7, 9."""
        s = self.subjects
        for i in range(5):
            event = AppendMessage(s.event("a" if i % 2 else "b"), str(i).encode())
            await self.log.append([event, AppendMessage(s.name(f"n{i}"), b"marker")])

    async def positions_of_pages(self, *args: int | None, **kwargs: object) -> list[list[int]]:
        pages = self.log.pages(*args, **kwargs)  # type: ignore[arg-type]
        return [[message.position for message in page] async for page in pages]


@pytest.fixture(params=["memory", "jetstream", "jetstream-raw"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """`jetstream-raw`: on a client with raw subscriptions (events/raw_delivery.py), which the
    service's connections are, so its reads take the raw path; `jetstream`: nats-py's own."""
    tag = uuid.uuid4().hex[:8]
    subjects = Subjects(f"c{tag}")
    if request.param == "memory":
        yield Backend(InMemoryLog(), subjects)
        return
    server: EmbeddedNats = request.getfixturevalue("nats_server")
    if request.param == "jetstream-raw":
        nc = RawSubscriptions()
        await nc.connect(servers=[server.url])
    else:
        nc = await nats.connect(server.url)
    try:
        log = JetStreamLog(nc, subjects, f"C{tag}", timeout_s=5)
        await log.ensure_stream(StreamSettings(f"C{tag}"))
        yield Backend(log, subjects)
    finally:
        await nc.close()


class TestAnEmptyLog:
    async def test_has_nothing_to_read(self, backend: Backend) -> None:
        s = backend.subjects
        assert await backend.log.last_position() == 0
        assert await backend.log.last(s.event("x")) is None
        assert await backend.log.first(s.event("x")) is None
        assert await backend.log.read(0, 10) == []
        assert await backend.positions_of_pages(0) == []
        assert await backend.positions_of_pages(0, 5) == []


class TestAppending:
    async def test_positions_start_at_one_and_leave_no_gaps(self, backend: Backend) -> None:
        s = backend.subjects
        assert await backend.log.append([AppendMessage(s.event("a"), b"1")]) == 1
        batch = [AppendMessage(s.event("b"), b"2"), AppendMessage(s.name("n"), b"3")]
        assert await backend.log.append(batch) == 3  # the position of its last message
        assert await backend.log.append([AppendMessage(s.event("a"), b"4")]) == 4
        assert await backend.log.last_position() == 4
        stored = await backend.log.read(0, 10)
        assert [(m.position, m.subject, m.data) for m in stored] == [
            (1, s.event("a"), b"1"),
            (2, s.event("b"), b"2"),
            (3, s.name("n"), b"3"),
            (4, s.event("a"), b"4"),
        ]

    async def test_every_message_is_stored_with_the_time_it_was_stored(
        self, backend: Backend
    ) -> None:
        await backend.fill(2)
        first, second = await backend.log.read(0, 2)
        assert first.time is not None and second.time is not None
        assert first.time <= second.time

    async def test_an_append_of_nothing_is_refused(self, backend: Backend) -> None:
        with pytest.raises(ValueError):
            await backend.log.append([])

    async def test_an_append_holds_at_most_a_thousand_messages(self, backend: Backend) -> None:
        s = backend.subjects
        with pytest.raises(ValueError):
            await backend.log.append([AppendMessage(s.event("a"), b"x")] * 1001)
        assert await backend.log.last_position() == 0
        assert await backend.log.append([AppendMessage(s.event("a"), b"x")] * 1000) == 1000


class TestGuards:
    async def test_expecting_zero_means_the_subject_must_be_empty(self, backend: Backend) -> None:
        s = backend.subjects
        assert await backend.log.append([AppendMessage(s.event("a"), b"1", 0)]) == 1
        with pytest.raises(WrongExpectedPosition):
            await backend.log.append([AppendMessage(s.event("a"), b"2", 0)])
        assert await backend.log.last_position() == 1

    async def test_a_guard_must_name_the_subjects_latest_position(self, backend: Backend) -> None:
        s = backend.subjects
        await backend.log.append([AppendMessage(s.event("a"), b"1")])
        await backend.log.append([AppendMessage(s.event("b"), b"2")])  # another subject
        for stale in (2, 3):
            with pytest.raises(WrongExpectedPosition):
                await backend.log.append([AppendMessage(s.event("a"), b"x", stale)])
        assert await backend.log.append([AppendMessage(s.event("a"), b"3", 1)]) == 3

    async def test_a_batch_with_one_failing_guard_stores_nothing(self, backend: Backend) -> None:
        s = backend.subjects
        first = await backend.log.append([AppendMessage(s.event("a"), b"1", 0)])
        with pytest.raises(WrongExpectedPosition):
            await backend.log.append(
                [
                    AppendMessage(s.event("b"), b"2", 0),
                    AppendMessage(s.name("x"), b"3", 0),
                    AppendMessage(s.event("a"), b"4", 0),  # wrong: "a" is at `first`
                ]
            )
        assert await backend.log.last_position() == first
        assert await backend.log.last(s.event("b")) is None
        assert await backend.log.last(s.name("x")) is None
        position = await backend.log.append(
            [AppendMessage(s.event("b"), b"2", 0), AppendMessage(s.event("a"), b"4", first)]
        )
        assert position == first + 2

    @pytest.mark.parametrize(
        ("first", "second"),
        [(0, 0), (0, 2), (None, 0), (None, 2)],
        ids=["both-expect-empty", "expects-the-first", "after-unguarded", "after-unguarded-2"],
    )
    async def test_a_guard_on_a_subject_the_same_append_writes_fails(
        self, backend: Backend, first: int | None, second: int
    ) -> None:
        s = backend.subjects
        await backend.fill(1, flow="other")  # so the append's first message would be at 2
        with pytest.raises(WrongExpectedPosition):
            await backend.log.append(
                [
                    AppendMessage(s.event("a"), b"x", first),
                    AppendMessage(s.event("a"), b"y", second),
                ]
            )
        assert await backend.log.last_position() == 1

    async def test_racing_guarded_appends_let_exactly_one_win(self, backend: Backend) -> None:
        s = backend.subjects
        outcomes = await asyncio.gather(
            *(
                backend.log.append(
                    [AppendMessage(s.event("a"), str(i).encode(), 0), AppendMessage(s.name(f"{i}"), b"m")]
                )
                for i in range(8)
            ),
            return_exceptions=True,
        )  # fmt: skip
        won = [outcome for outcome in outcomes if isinstance(outcome, int)]
        assert len(won) == 1, outcomes
        assert all(isinstance(o, WrongExpectedPosition) for o in outcomes if o not in won)
        assert await backend.log.last_position() == 2


class TestFirstAndLast:
    async def test_are_by_subject(self, backend: Backend) -> None:
        s = backend.subjects
        await backend.interleave()
        first_a, last_a = (
            await backend.log.first(s.event("a")),
            await backend.log.last(s.event("a")),
        )
        assert first_a is not None and last_a is not None
        assert (first_a.data, first_a.position, first_a.subject) == (b"1", 3, s.event("a"))
        assert (last_a.data, last_a.position) == (b"3", 7)
        only = await backend.log.last(s.name("n4"))
        assert only is not None and only == await backend.log.first(s.name("n4"))
        assert await backend.log.last(s.event("c")) is None


class TestReading:
    async def test_reads_after_a_position_up_to_a_limit_matching_a_filter(
        self, backend: Backend
    ) -> None:
        s = backend.subjects
        await backend.interleave()
        events = await backend.log.read(0, 100, s.all_events)
        assert [m.data for m in events] == [b"0", b"1", b"2", b"3", b"4"]
        assert [m.position for m in events] == [1, 3, 5, 7, 9]
        assert [m.position for m in await backend.log.read(3, 2, s.all_events)] == [5, 7]
        assert [m.position for m in await backend.log.read(0, 100, s.event("a"))] == [3, 7]
        assert len(await backend.log.read(0, 100)) == 10
        assert [m.position for m in await backend.log.read(8, 100)] == [9, 10]
        assert await backend.log.read(10, 100) == []


class TestPages:
    async def test_pages_cut_the_log_at_the_batch_size(self, backend: Backend) -> None:
        await backend.fill(10)
        assert await backend.positions_of_pages(0, max_batch=3) == [
            [1, 2, 3], [4, 5, 6], [7, 8, 9], [10]
        ]  # fmt: skip
        assert await backend.positions_of_pages(1, max_batch=3) == [
            [2, 3, 4],
            [5, 6, 7],
            [8, 9, 10],
        ]
        assert await backend.positions_of_pages(0, max_batch=1000) == [list(range(1, 11))]

    async def test_pages_start_after_a_position_and_stop_at_until(self, backend: Backend) -> None:
        await backend.fill(10)
        assert await backend.positions_of_pages(0, 7, 3) == [[1, 2, 3], [4, 5, 6], [7]]
        assert await backend.positions_of_pages(4, 6, 3) == [[5, 6]]
        assert await backend.positions_of_pages(4, 4, 3) == []
        assert await backend.positions_of_pages(6, 4, 3) == []
        assert await backend.positions_of_pages(8, 50, 3) == [[9, 10]]
        assert await backend.positions_of_pages(10, None, 3) == []
        assert await backend.positions_of_pages(0, 0, 3) == []

    async def test_pages_of_one_subject_stop_at_until_too(self, backend: Backend) -> None:
        s = backend.subjects
        for i in range(6):
            await backend.log.append([AppendMessage(s.event(f"{i % 2}"), b"e")])
        odd = s.event("1")
        assert await backend.positions_of_pages(0, max_batch=2, subject_filter=odd) == [[2, 4], [6]]
        assert await backend.positions_of_pages(0, 5, 1, subject_filter=odd) == [[2], [4]]
        assert await backend.positions_of_pages(0, subject_filter=s.event("none")) == []

    async def test_pages_of_every_event_leave_out_the_name_markers(self, backend: Backend) -> None:
        """What the projector and a rebuild catch up with: events only, up to an end."""
        await backend.interleave()  # events at 1, 3, 5, 7, 9; markers between
        every_event = backend.subjects.all_events
        assert await backend.positions_of_pages(0, 10, 2, subject_filter=every_event) == [
            [1, 3],
            [5, 7],
            [9],
        ]
        assert await backend.positions_of_pages(3, 8, 2, subject_filter=every_event) == [[5, 7]]
        assert await backend.positions_of_pages(9, 10, 2, subject_filter=every_event) == []

    async def test_reading_ahead_gives_what_reading_one_page_at_a_time_gives(
        self, backend: Backend
    ) -> None:
        await backend.fill(25)
        everything = await backend.log.read(0, 1000)
        for max_batch in (1, 4, 5, 1000):
            got: list[StoredMessage] = []
            async for page in backend.log.pages(0, max_batch=max_batch):
                await asyncio.sleep(0.001)  # a slow reader: the next page is read meanwhile
                assert 0 < len(page) <= max_batch
                got.extend(page)
            assert got == everything, max_batch

    async def test_a_reader_may_stop_early(self, backend: Backend) -> None:
        await backend.fill(10)
        pages = backend.log.pages(0, max_batch=2)
        async with contextlib.aclosing(pages):
            async for page in pages:
                assert [m.position for m in page] == [1, 2]
                break
        assert await backend.positions_of_pages(8, max_batch=2) == [[9, 10]]

    async def test_pages_end_at_the_end_of_the_log_as_it_was(self, backend: Backend) -> None:
        await backend.fill(3)
        seen: list[int] = []
        async for page in backend.log.pages(0, max_batch=2):
            seen.extend(m.position for m in page)
        await backend.fill(1)
        assert seen == [1, 2, 3]
        assert await backend.positions_of_pages(3) == [[4]]


class TestFollowing:
    async def test_delivers_everything_after_a_position_then_live(self, backend: Backend) -> None:
        s = backend.subjects
        await backend.fill(3)
        seen: list[StoredMessage] = []
        done = asyncio.Event()

        async def follow() -> None:
            async for batch in backend.log.follow(1, max_batch=2):
                assert 0 < len(batch) <= 2
                seen.extend(batch)
                if seen and seen[-1].position >= 5:
                    done.set()

        task = asyncio.create_task(follow())
        try:
            await backend.log.append([AppendMessage(s.event("f"), b"3")])
            await backend.log.append([AppendMessage(s.name("z"), b"m")])
            await asyncio.wait_for(done.wait(), 10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert [m.position for m in seen] == [2, 3, 4, 5]
        assert [m.data for m in seen] == [b"1", b"2", b"3", b"m"]
        assert all(m.time is not None for m in seen)

    async def test_from_zero_delivers_the_whole_log(self, backend: Backend) -> None:
        await backend.fill(3)
        follower = backend.log.follow(0)
        async with contextlib.aclosing(follower):
            seen: list[int] = []
            while len(seen) < 3:
                batch = await asyncio.wait_for(anext(follower), 10)
                seen.extend(m.position for m in batch)
        assert seen == [1, 2, 3]
