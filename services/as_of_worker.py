"""The as-of worker: a process of its own, at a lower CPU priority than the service, that builds
the models `Flows-As-Of` queries read and takes the snapshots they start from, so audit work
never takes the CPU live requests need.

`flows serve` starts it (services/as_of_client.py) with its settings in the environment and
talks to it over stdin/stdout, one JSON object a line:
    {"id": 1, "position": 1234, "path": "/data/as-of/work/model-1.sqlite"}
    -> {"id": 1, "messages": 234} | {"id": 1, "refused": "..."} | {"id": 1, "error": "..."}
It exits when its stdin closes (the service stopped, or died).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog
from projections.as_of_builder import AsOfBuilder, AsOfRefused
from projections.snapshots import SnapshotStore
from projections.tables import SCHEMA_VERSION
from services.nats_connection import connect_nats
from services.settings import Settings

__all__ = ["main", "snapshot_dir"]

log = logging.getLogger("services.as_of_worker")


def snapshot_dir(settings: Settings) -> Path:
    """Snapshots are of one stream, folded by one schema version: a new version starts anew."""
    return settings.data_dir / "as-of" / f"{settings.stream}-v{SCHEMA_VERSION}"


async def _serve(settings: Settings) -> None:
    subjects = Subjects(settings.subject_prefix)
    nc = await connect_nats(settings, "flows-as-of-worker")
    event_log = JetStreamLog(nc, subjects, settings.stream, settings.log_timeout_s)
    every = settings.as_of_snapshot_every
    store = (
        SnapshotStore(snapshot_dir(settings), settings.as_of_snapshot_max_mb * 2**20)
        if every > 0
        else None
    )
    builder = AsOfBuilder(
        event_log, subjects, store, every=every, max_events=settings.as_of_max_events
    )
    follower = asyncio.create_task(_keep_following(builder)) if store is not None else None
    reader = asyncio.StreamReader(limit=2**20)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while line := await reader.readline():
            task = asyncio.create_task(_answer(builder, orjson.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for pending in [*tasks, *([follower] if follower else [])]:
            pending.cancel()
        await asyncio.gather(*tasks, *([follower] if follower else []), return_exceptions=True)
        await builder.close()
        with contextlib.suppress(Exception):
            await nc.close()


async def _answer(builder: AsOfBuilder, request: dict[str, Any]) -> None:
    reply: dict[str, Any] = {"id": request["id"]}
    try:
        reply["messages"] = await builder.materialize(request["position"], Path(request["path"]))
    except AsOfRefused as exc:
        reply["refused"] = str(exc)
    except Exception as exc:
        log.exception("the as-of worker could not build the model at %s", request["position"])
        reply["error"] = f"{type(exc).__name__}: {exc}"
    sys.stdout.buffer.write(orjson.dumps(reply) + b"\n")
    sys.stdout.buffer.flush()


async def _keep_following(builder: AsOfBuilder) -> None:
    """Snapshots keep being taken across failures (a lost connection, a full disk)."""
    delay = 0.5
    while True:
        try:
            await builder.follow()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the as-of snapshot follower stopped; restarting in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.nice(settings.as_of_worker_nice)  # why this process exists: live requests come first
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
