"""How fast `flows rebuild` rebuilds the read model while the service's projector runs.

    .venv/bin/python -m benchmarks.rebuild_rate [--events 100000] [--postgres-url URL]

Starts its own nats-server, fills a stream with synthetic flows encoded as the writer encodes
them (benchmarks/synthetic.py: a create and its name marker per flow, an update for every
fourth, so 100k events are ~180k log messages), lets a live projector fold them into the read
model, then runs the online rebuild against that live model with the projector still following
the log. Prints events/s and log messages/s, the elapsed time and how long the swap held the
live projector's lock, per backend (SQLite; PostgreSQL too when a URL is given).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from nats.aio.client import Client as NatsClient
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks.log_stages import fill_stream, log_read_rates
from benchmarks.postgres import fresh_database
from benchmarks.synthetic import flow_messages
from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog
from projections.position_watcher import PositionWatcher
from projections.projector import Projector
from projections.rebuild import rebuild_online
from projections.store import configure_engine, create_schema
from services.embedded import EmbeddedNats
from services.nats_connection import connect_nats
from services.serve import before_run
from services.settings import Settings

EVENTS_PER_FLOW = 1.25  # a create each, an update for every fourth flow


async def measure(nc: NatsClient, stream: str, last: int, events: int, engine: AsyncEngine) -> None:
    subjects = Subjects()
    event_log = JetStreamLog(nc, subjects, stream, timeout_s=30)
    await create_schema(engine)
    watcher = PositionWatcher()
    projector = Projector(engine, event_log, subjects, watcher)
    started, cpu = time.perf_counter(), time.process_time()
    live = asyncio.create_task(projector.run())
    try:
        if not await watcher.wait_for(last, 900):
            raise RuntimeError(f"the live projector reached only {watcher.position} of {last}")
        projected = time.perf_counter() - started
        # CPU per message (this process, every thread): steadier than rates on a busy machine.
        projector_cpu, cpu = time.process_time() - cpu, time.process_time()
        report = await rebuild_online(engine, event_log, subjects)
        rebuild_cpu = time.process_time() - cpu
    finally:
        live.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live
    backend = engine.dialect.name
    print(
        f"{backend:10s} live projector: {events / projected:8.0f} events/s "
        f"({last / projected:7.0f} messages/s, {projected:6.1f} s, "
        f"{projector_cpu / last * 1e6:.0f} us CPU a message)"
    )
    print(
        f"{backend:10s} online rebuild: {report.event_rate:8.0f} events/s "
        f"({report.rate:7.0f} messages/s, {report.elapsed_s:6.1f} s, "
        f"{report.messages} messages to position {report.position}); "
        f"swap held the live projector {report.swap_s * 1000:.0f} ms, "
        f"{rebuild_cpu / report.messages * 1e6:.0f} us CPU a message"
    )


@contextlib.asynccontextmanager
async def postgres_database(url: str):  # type: ignore[no-untyped-def]
    async with fresh_database(url) as fresh:
        engine = create_async_engine(fresh)
        try:
            yield engine
        finally:
            await engine.dispose()


async def main(events: int, postgres_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # nats-server's default fsync interval: this measures reading the log, not writing it.
        server = EmbeddedNats(Path(tmp) / "nats", sync_interval=None)
        server.start()
        try:
            # The kind of connection `flows serve` and `flows rebuild` read the log with.
            nc = await connect_nats(Settings(nats_url=server.url), "bench-rebuild", retry=False)
            stream = "REBUILDBENCH"
            flows = round(events / EVENTS_PER_FLOW)
            started = time.perf_counter()
            last = await fill_stream(nc, stream, flow_messages(Subjects(), 0, flows))
            print(
                f"log: {flows} flows, {events} events, {last} messages "
                f"(filled in {time.perf_counter() - started:.1f} s)"
            )
            followed, paged = await log_read_rates(nc, stream, last)
            print(
                f"log read alone: {followed:.0f} messages/s following it, {paged:.0f} messages/s "
                "page by page"
            )
            sqlite = create_async_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'flows.db'}")
            configure_engine(sqlite)
            try:
                await measure(nc, stream, last, events, sqlite)
            finally:
                await sqlite.dispose()
            if postgres_url:
                async with postgres_database(postgres_url) as engine:
                    await measure(nc, stream, last, events, engine)
            await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--postgres-url", help="e.g. postgresql+asyncpg://postgres@127.0.0.1/test")
    options = parser.parse_args()
    before_run()  # uvloop, as the service runs on
    asyncio.run(main(options.events, options.postgres_url))
