"""Log-side stages: fill a stream fast, the projector's catch-up rate, the rebuild rate."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Iterable
from pathlib import Path

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import create_async_engine

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, StreamSettings
from projections.position_watcher import PositionWatcher
from projections.projector import Projector
from projections.store import configure_engine, create_schema
from services.log_tools import rebuild
from services.settings import Settings

__all__ = ["fill_stream", "log_read_rates", "projector_rate", "rebuild_seconds"]

_WINDOW = 4000  # publishes awaiting their ack at once


async def fill_stream(nc: NatsClient, stream: str, messages: Iterable[tuple[str, bytes]]) -> int:
    """Publish with acks, `_WINDOW` in flight; returns the stream's last position."""
    log = JetStreamLog(nc, Subjects(), stream)
    await log.ensure_stream(StreamSettings(name=stream))
    window = asyncio.Semaphore(_WINDOW)
    refused: list[bytes] = []

    async def on_ack(msg: Msg) -> None:
        if b'"error"' in msg.data:
            refused.append(msg.data)
        window.release()

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=on_ack)
    try:
        for subject, data in messages:
            await window.acquire()
            await nc.publish(subject, data, reply=inbox)
        for _ in range(_WINDOW):  # every ack is in
            await asyncio.wait_for(window.acquire(), 60)
    finally:
        await subscription.unsubscribe()
    if refused:
        raise RuntimeError(f"{len(refused)} publishes refused, first: {refused[0]!r}")
    return await log.last_position()


async def log_read_rates(nc: NatsClient, stream: str, last: int) -> tuple[float, float]:
    """Messages per second reading the stream to `last` and doing nothing else, by following it
    (what the live projector reads with) and page by page (`EventLog.pages`, what a rebuild
    reads with): the ceilings of the two, which read in this process too."""
    log = JetStreamLog(nc, Subjects(), stream, timeout_s=30)
    started = time.perf_counter()
    async with contextlib.aclosing(log.follow(0, 2000)) as batches:
        async for batch in batches:
            if batch[-1].position >= last:
                break
    followed = last / (time.perf_counter() - started)
    started = time.perf_counter()
    async with contextlib.aclosing(log.pages(0, until=last, max_batch=2000)) as pages:
        async for _ in pages:
            pass
    return followed, last / (time.perf_counter() - started)


async def projector_rate(nc: NatsClient, stream: str, last: int, db: Path) -> float:
    """Seconds the service's projector takes to fold the stream (up to `last`) into an empty
    SQLite read model, following the log exactly as `flows serve` does."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    configure_engine(engine)
    await create_schema(engine)
    watcher = PositionWatcher()
    projector = Projector(engine, JetStreamLog(nc, Subjects(), stream), Subjects(), watcher)
    started = time.perf_counter()
    task = asyncio.create_task(projector.run())
    try:
        if not await watcher.wait_for(last, 600):
            raise RuntimeError(f"the projector reached only {watcher.position} of {last}")
        return time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.dispose()


async def rebuild_seconds(nats_url: str, stream: str, data_dir: Path) -> float:
    """Seconds `flows rebuild` takes to rebuild a fresh SQLite read model from the stream."""
    settings = Settings(nats_url=nats_url, stream=stream, data_dir=data_dir)
    report = io.StringIO()
    started = time.perf_counter()
    code = await rebuild(settings, report)
    elapsed = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"flows rebuild failed ({code}): {report.getvalue()}")
    return elapsed
