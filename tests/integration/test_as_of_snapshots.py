"""As-of answers from snapshots: the worker process snapshots the model every N positions, an
answer replays fewer than N messages from the nearest one, and the answers are still, byte for
byte, what the live model answered at that position, across a restart of the service."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog
from projections import as_of_builder
from projections.as_of_builder import AsOfBuilder
from projections.snapshots import SnapshotStore
from services.as_of_worker import snapshot_dir
from services.client import FlowsClient
from services.settings import Settings
from tests import backends
from tests.integration.conftest import running
from tests.integration.test_as_of import answers, read_ids, recorded_workload

EVERY = 3


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout_s: float = 20):
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found if isinstance(found, bool) else await found:
            return
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.05)


def snapshots_reach(directory: Path, position: int) -> Callable[[], bool]:
    return lambda: directory.is_dir() and SnapshotStore(directory, 2**40).newest() >= position


async def test_answers_from_snapshots_match_the_live_model_across_a_restart(
    settings: Settings, nc: NatsClient
) -> None:
    snapshotting = dataclasses.replace(settings, as_of_snapshot_every=EVERY)
    directory = snapshot_dir(snapshotting)
    async with running(snapshotting, nc):
        client = FlowsClient(nc, snapshotting.subject_prefix)
        recorded = await recorded_workload(client)
        end = recorded[-1].position
        await client.count(as_of=1)  # starts the worker, which snapshots as it follows
        await until(snapshots_reach(directory, end - end % EVERY), "snapshots up to the end")
        for snapshot in recorded:
            as_of = await answers(client, read_ids(snapshot), as_of=snapshot.position)
            assert as_of == snapshot.answers, f"as of position {snapshot.position}"
    kept = SnapshotStore(directory, 2**40).positions()
    assert kept == list(range(EVERY, end + 1, EVERY))  # on disk, for the next start
    async with running(snapshotting, nc):
        client = FlowsClient(nc, snapshotting.subject_prefix)
        for snapshot in reversed(recorded):
            as_of = await answers(client, read_ids(snapshot), as_of=snapshot.position)
            assert as_of == snapshot.answers, f"after a restart, as of {snapshot.position}"


@backends.only(backends.SQLITE)  # the service's model plays no part: as-of models are SQLite
async def test_a_model_replays_fewer_messages_than_the_snapshot_interval(
    service: Settings, nc: NatsClient, tmp_path: Path
) -> None:
    client = FlowsClient(nc, service.subject_prefix)
    await recorded_workload(client)
    subjects = Subjects(service.subject_prefix)
    event_log = JetStreamLog(nc, subjects, service.stream)
    end = await event_log.last_position()
    store = SnapshotStore(tmp_path / "snapshots", 2**40)
    builder = AsOfBuilder(event_log, subjects, store, every=4, max_events=1000)
    follower = asyncio.create_task(builder.follow())
    try:
        await until(lambda: builder.followed >= end - end % 4, "snapshots up to the log's end")
        for position in range(end + 1):
            replayed = await builder.materialize(position, tmp_path / f"m-{position}.sqlite")
            assert replayed == position % 4, position
    finally:
        await stop(builder, follower)
    assert not list((tmp_path / "snapshots").glob("*.work"))


@backends.only(backends.SQLITE)
async def test_the_worker_runs_at_a_lower_cpu_priority(service: Settings, nc: NatsClient) -> None:
    client = FlowsClient(nc, service.subject_prefix)
    made = await client.create("one")
    assert (await client.count(as_of=made.position)).body == 1

    [worker] = worker_pids()
    assert os.getpriority(os.PRIO_PROCESS, worker) == os.nice(0) + service.as_of_worker_nice


async def stop(builder: AsOfBuilder, follower: asyncio.Task[None]) -> None:
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    await builder.close()


def worker_pids() -> list[int]:
    """The as-of workers this test process's services started."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if (
                int(fields[1]) == os.getpid()
                and b"services.as_of_worker" in (stat.parent / "cmdline").read_bytes()
            ):
                found.append(int(stat.parent.name))
    return found


@backends.only(backends.SQLITE)
async def test_a_worker_that_dies_is_started_again(service: Settings, nc: NatsClient) -> None:
    client = FlowsClient(nc, service.subject_prefix)
    made = await client.create("one")
    assert made.position is not None
    assert (await client.count(as_of=made.position)).body == 1
    [worker] = worker_pids()
    os.kill(worker, signal.SIGKILL)

    async def answers_again() -> bool:
        reply = await client.count(as_of=0)  # not the cached model: the worker builds it
        assert reply.status in (200, 503), reply  # 503 (retry) only while it restarts
        return reply.status == 200 and reply.body == 0

    await until(answers_again, "an as-of answer from a new worker")
    assert worker not in worker_pids() and len(worker_pids()) == 1


@backends.only(backends.SQLITE)
async def test_snapshots_are_spaced_wider_on_a_model_with_many_flows(
    service: Settings, nc: NatsClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One position of spacing per flow alive (the shipped ratio is one per 10 flows): after the
    # first creates, snapshots must be at least as many positions apart as flows were alive.
    monkeypatch.setattr(as_of_builder, "_FLOWS_PER_POSITION_OF_SPACING", 1)
    client = FlowsClient(nc, service.subject_prefix)
    for i in range(8):
        assert (await client.create(f"spaced-{i}")).ok
    subjects = Subjects(service.subject_prefix)
    event_log = JetStreamLog(nc, subjects, service.stream)
    end = await event_log.last_position()
    store = SnapshotStore(tmp_path / "snapshots", 2**40)
    builder = AsOfBuilder(event_log, subjects, store, every=1, max_events=1000)
    follower = asyncio.create_task(builder.follow())
    try:
        # A create is two messages (event, name marker): flows alive at position p are p // 2.
        await until(lambda: builder.followed + (builder.followed // 2) > end, "the last snapshot")
        positions = store.positions()
        assert len(positions) >= 3, positions
        for earlier, later in itertools.pairwise(positions):
            assert later - earlier >= max(1, earlier // 2), positions
        assert len(positions) < end  # not one per position, as `every=1` alone would take
    finally:
        await stop(builder, follower)


def model_rows(path: Path) -> list[str]:
    """Everything a model file holds, as SQL, in an order that does not depend on how it was
    built."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(db.iterdump())
    finally:
        db.close()


@contextlib.asynccontextmanager
async def followed_builder(
    service: Settings, nc: NatsClient, tmp_path: Path, *, recent: int
) -> AsyncIterator[tuple[AsOfBuilder, AsOfBuilder, int]]:
    """A snapshotting builder (every 4) that has followed the recorded workload to its end, one
    that replays from the start of the log (the reference), and the log's end."""
    await recorded_workload(FlowsClient(nc, service.subject_prefix))
    subjects = Subjects(service.subject_prefix)
    event_log = JetStreamLog(nc, subjects, service.stream)
    end = await event_log.last_position()
    store = SnapshotStore(tmp_path / "snapshots", 2**40)
    builder = AsOfBuilder(event_log, subjects, store, every=4, max_events=1000, recent=recent)
    follower = asyncio.create_task(builder.follow())
    try:
        await until(lambda: builder.followed >= end - end % 4, "snapshots up to the log's end")
        await until(lambda: builder.recent.until >= end, "the follower's window up to the end")
        yield builder, AsOfBuilder(event_log, subjects, None, every=0, max_events=0), end
    finally:
        await stop(builder, follower)


async def build_as_reference(
    builder: AsOfBuilder, reference: AsOfBuilder, tmp_path: Path, position: int
) -> tuple[int, Path]:
    """The model at `position` built by `builder`, which must hold what `reference` builds
    there; the messages replayed, and the file."""
    built, expected = tmp_path / f"m-{position}.sqlite", tmp_path / f"r-{position}.sqlite"
    replayed = await builder.materialize(position, built)
    await reference.materialize(position, expected)
    assert model_rows(built) == model_rows(expected), position
    return replayed, built


@backends.only(backends.SQLITE)
async def test_a_position_at_a_snapshot_is_answered_by_the_snapshot_itself(
    service: Settings, nc: NatsClient, tmp_path: Path
) -> None:
    async with followed_builder(service, nc, tmp_path, recent=100) as (builder, reference, end):
        for position in range(4, end + 1, 4):
            replayed, built = await build_as_reference(builder, reference, tmp_path, position)
            assert replayed == 0, position
            snapshot = tmp_path / "snapshots" / f"at-{position:012d}.sqlite"
            assert built.samefile(snapshot), position  # linked, not copied
        assert builder.replays_from_window == builder.replays_from_log == 0  # nothing replayed


@backends.only(backends.SQLITE)
async def test_replays_read_the_followers_window_and_the_log_where_it_does_not_reach(
    service: Settings, nc: NatsClient, tmp_path: Path
) -> None:
    # A window of the last 3 messages: replays from the last snapshot read it, the rest the log.
    async with followed_builder(service, nc, tmp_path, recent=3) as (builder, reference, end):
        for position in range(end + 1):
            start = position - position % 4
            if start == position:
                continue  # the snapshot itself (the test above)
            read = builder.replays_from_window, builder.replays_from_log
            replayed, _ = await build_as_reference(builder, reference, tmp_path, position)
            assert replayed == position - start, position
            from_window = start >= end - 3
            assert (builder.replays_from_window, builder.replays_from_log) == (
                read[0] + from_window,
                read[1] + (not from_window),
            ), position
        assert builder.replays_from_window and builder.replays_from_log
