"""How fast `flows verify` checks a log: writes N events with the service's writer (creates,
updates, deletes, with their chain links and name markers), appends them to a JetStream stream
at the same positions, lets the projector build the live read model, then times one verify (the
log walk, the scratch replay and the row-by-row comparison).

The events are written into an in-memory log first and copied into the stream in batches of
1000: the messages are byte for byte what the service appends, and the benchmark does not wait
on one JetStream atomic batch per create (which would dominate its run time here).

Starts its own nats-server (loopback, free port, nats-server's default fsync interval) in a
temporary directory.

    .venv/bin/python benchmarks/verify_rate.py [--events 100000] [--in-flight 256]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import nats

from events.contract.commands import CreateFlow, DeleteFlow, UpdateFlow
from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, StreamSettings
from events.log import AppendMessage
from events.memory_log import InMemoryLog
from events.writer import FlowWriter
from projections.position_watcher import PositionWatcher
from projections.projector import Projector
from projections.store import create_schema
from services.bootstrap import create_engine
from services.embedded import EmbeddedNats
from services.settings import Settings
from services.verify_tool import run_verify


async def bounded(commands: Iterable[Callable[[], Awaitable[object]]], in_flight: int) -> None:
    slots = asyncio.Semaphore(in_flight)

    async def one(command: Callable[[], Awaitable[object]]) -> None:
        async with slots:
            await command()

    await asyncio.gather(*(one(command) for command in commands))


async def append_events(writer: FlowWriter, events: int, in_flight: int) -> list[str]:
    """40% creates, 50% updates, 10% deletes; returns the created flow ids."""
    creates, deletes = int(events * 0.4), int(events * 0.1)
    updates = events - creates - deletes
    ids: list[str] = []

    async def create(n: int) -> None:
        command = CreateFlow(name=f"flow-{n}", tags=["bench", f"g{n % 10}"], labels={"n": n})
        outcome = await writer.execute(command)
        ids.append(outcome.body["id"])

    await bounded([functools.partial(create, n) for n in range(creates)], in_flight)
    rng = random.Random(7)
    targets = [rng.choice(ids) for _ in range(updates)]
    await bounded(
        [
            functools.partial(writer.execute, UpdateFlow(id=t, tags=[f"t{n % 7}"]))
            for n, t in enumerate(targets)
        ],
        in_flight,
    )
    await bounded(
        [functools.partial(writer.execute, DeleteFlow(id=t)) for t in rng.sample(ids, deletes)],
        in_flight,
    )
    return ids


async def main(events: int, in_flight: int) -> None:
    with tempfile.TemporaryDirectory(prefix="verify-bench-") as tmp:
        # nats-server's own fsync interval: what is timed is reading, not appending.
        server = EmbeddedNats(Path(tmp) / "nats", sync_interval=None)
        server.start()
        try:
            settings = Settings(
                nats_url=server.url,
                nats_url_explicit=True,
                subject_prefix="bench",
                stream="BENCH",
                data_dir=Path(tmp) / "data",
            )
            await run(settings, events, in_flight)
        finally:
            server.stop()


async def run(settings: Settings, events: int, in_flight: int) -> None:
    subjects = Subjects(settings.subject_prefix)
    nc = await nats.connect(settings.nats_url)
    engine = create_engine(settings)
    try:
        event_log = JetStreamLog(nc, subjects, settings.stream, timeout_s=30)
        await event_log.ensure_stream(StreamSettings(name=settings.stream))
        started = time.perf_counter()
        written = InMemoryLog()
        await append_events(FlowWriter(written, subjects), events, in_flight)
        for start in range(0, len(written.messages), 1000):
            batch = written.messages[start : start + 1000]
            await event_log.append([AppendMessage(m.subject, m.data) for m in batch])
        appended_s = time.perf_counter() - started
        last = await event_log.last_position()
        assert last == len(written.messages), "the stream was not empty"
        print(f"appended {events} events ({last} log messages) in {appended_s:.1f}s")

        await create_schema(engine)
        watcher = PositionWatcher()
        projector = asyncio.create_task(Projector(engine, event_log, subjects, watcher).run())
        started = time.perf_counter()
        if not await watcher.wait_for(last, timeout_s=600):
            raise SystemExit("the projector did not catch up within 600s")
        print(f"live read model built in {time.perf_counter() - started:.1f}s")
        projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projector
    finally:
        await engine.dispose()
        await nc.close()

    report = await run_verify(settings, sys.stderr)
    if not report.ok:
        raise SystemExit(f"verify found problems in a healthy log: {report.findings[:3]}")
    print(
        f"verify: {report.events} events, {report.messages} log messages, {report.flows} flows "
        f"in {report.elapsed_s:.2f}s = {report.events_per_s:.0f} events/s "
        f"({report.messages / report.elapsed_s:.0f} log messages/s)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--in-flight", type=int, default=256)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, arguments.in_flight))
