"""`flows replay` and `flows rebuild`: tools that read the log directly, without the service."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import orjson
from nats.errors import Error as NatsError
from sqlalchemy import delete

from events.errors import LogUnavailable
from events.jetstream import JetStreamLog
from events.subjects import Subjects
from projections.projector import apply_batch
from projections.store import create_schema
from projections.tables import metadata
from services.audit import recorded_json
from services.runtime import connect_nats, create_engine
from services.settings import Settings

__all__ = ["rebuild", "replay"]

log = logging.getLogger(__name__)

_PAGE = 1000


def _unreachable(tool: str, settings: Settings, exc: BaseException, err: TextIO) -> int:
    err.write(
        f"flows {tool}: cannot read the event log (stream {settings.stream} at "
        f"{settings.nats_url}): {exc or type(exc).__name__}\n"
        "check --nats-url/FLOWS_NATS_URL and --stream/FLOWS_STREAM\n"
    )
    return 3


async def replay(settings: Settings, out: TextIO, err: TextIO = sys.stderr) -> int:
    """The log on `out`, one RecordedEvent as JSON per line, in log order."""
    try:
        return await _replay(settings, out)
    except (LogUnavailable, NatsError, OSError) as exc:
        return _unreachable("replay", settings, exc, err)


async def _replay(settings: Settings, out: TextIO) -> int:
    subjects = Subjects(settings.subject_prefix)
    nc = await connect_nats(settings, "flows-replay", retry=False)
    try:
        event_log = JetStreamLog(nc, subjects, settings.stream, settings.log_timeout_s)
        after = 0
        while True:
            page = await event_log.read(after, _PAGE, subjects.all_events)
            for message in page:
                out.write(orjson.dumps(recorded_json(message)).decode() + "\n")
            if len(page) < _PAGE:
                break
            after = page[-1].position
        out.flush()
    finally:
        await nc.close()
    return 0


async def rebuild(settings: Settings, err: TextIO = sys.stderr) -> int:
    """Rebuild the read model from the log in one transaction: readers see the old model until
    the new one is complete, and a failed rebuild leaves the old one untouched."""
    try:
        return await _rebuild(settings, err)
    except (LogUnavailable, NatsError, OSError) as exc:
        return _unreachable("rebuild", settings, exc, err)


async def _rebuild(settings: Settings, err: TextIO) -> int:
    subjects = Subjects(settings.subject_prefix)
    nc = await connect_nats(settings, "flows-rebuild", retry=False)
    engine = create_engine(settings)
    started = time.perf_counter()
    messages = 0
    try:
        event_log = JetStreamLog(nc, subjects, settings.stream, settings.log_timeout_s)
        await create_schema(engine)
        async with engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(delete(table))
            after = 0
            while True:
                page = await event_log.read(after, _PAGE)
                if page:
                    await apply_batch(conn, subjects, page)
                    messages += len(page)
                    after = page[-1].position
                if len(page) < _PAGE:
                    break
    finally:
        await nc.close()
        await engine.dispose()
    elapsed = time.perf_counter() - started
    err.write(
        f"rebuilt the read model from {messages} log messages (up to position {after}) "
        f"in {elapsed:.2f}s ({messages / elapsed if elapsed else 0:.0f} messages/s)\n"
    )
    return 0
