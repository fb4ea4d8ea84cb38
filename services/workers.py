"""`flows serve --workers N`: N service processes in the queue group under one parent.

One Python process answers on one core; a second process in the same queue group uses the
second. The parent starts the workers (`flows serve` each, with the parent's settings), forwards
SIGTERM/SIGINT to them (each drains as a lone service does) and starts again a worker that
died, with a growing pause if it keeps dying. It answers no request itself.

Read model: with a PostgreSQL `FLOWS_DATABASE_URL` the workers share it. Without one, each
worker keeps its own SQLite replica (`<data dir>/worker-<i>`), like separate instances: SQLite
lets one process write at a time, so workers sharing one file would queue their projectors (and
each would fold every batch only to find it applied); replicas share nothing, and reads stay
linearizable across workers through the log's end (see "Running several instances").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from services.settings import Settings

__all__ = ["supervise", "worker_environment"]

log = logging.getLogger(__name__)

# A worker that stops within this long of its start counts as failing to start: the next start
# waits longer (doubling up to the maximum); one that ran longer restarts at once.
_HEALTHY_AFTER_S = 30.0
_FIRST_PAUSE_S = 0.5
_MAX_PAUSE_S = 30.0
# How long a stopping worker may drain (it answers what it received first) before SIGKILL.
_STOP_GRACE_S = 30.0


def worker_environment(settings: Settings, index: int) -> dict[str, str]:
    """The environment of worker `index`: the parent's, its settings, and the worker's own
    data dir (its SQLite replica) and metrics port."""
    environment = {**os.environ, **settings.environment(), "FLOWS_WORKERS": "1"}
    environment["FLOWS_DATA_DIR"] = str(settings.data_dir / f"worker-{index}")
    if settings.metrics_addr:
        host, _, port = settings.metrics_addr.rpartition(":")
        environment["FLOWS_METRICS_ADDR"] = f"{host}:{int(port) + index}"
    return environment


@dataclass
class _Worker:
    index: int
    environment: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    pause_s: float = _FIRST_PAUSE_S
    exits: list[int] = field(default_factory=list)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "serve", env=self.environment
        )
        self.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", self.index, self.process.pid)

    def pause_before_restart(self) -> float:
        """How long to wait before starting again, after an exit now."""
        if time.monotonic() - self.started_at >= _HEALTHY_AFTER_S:
            self.pause_s = _FIRST_PAUSE_S
            return 0.0
        pause, self.pause_s = self.pause_s, min(self.pause_s * 2, _MAX_PAUSE_S)
        return pause

    async def stop(self) -> int:
        process = self.process
        if process is None or process.returncode is not None:
            return 0 if process is None else process.returncode or 0
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(_STOP_GRACE_S):
                return await process.wait()
        except TimeoutError:
            log.warning(
                "worker %d did not stop within %.0fs: killing it", self.index, _STOP_GRACE_S
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return 1


async def supervise(settings: Settings, stop: asyncio.Event) -> int:
    """Run `settings.workers` workers until `stop` is set; 0 when every worker stopped
    cleanly."""
    workers = [_Worker(i, worker_environment(settings, i)) for i in range(settings.workers)]
    log.info(
        "starting %d workers in queue group %s (%s)",
        len(workers),
        settings.queue_group,
        "one SQLite replica each" if settings.database_url is None else "one shared read model",
    )
    for worker in workers:
        await worker.start()
    restarts: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            exited = await _first_exit(workers, stop)
            if exited is None:
                break
            code = exited.process.returncode if exited.process else None
            pause = exited.pause_before_restart()
            log.warning(
                "worker %d (pid %s) exited with %s; starting it again in %.1fs",
                exited.index,
                exited.process.pid if exited.process else "?",
                _describe(code),
                pause,
            )
            exited.process = None
            task = asyncio.create_task(_restart_after(exited, pause, stop))
            restarts.add(task)
            task.add_done_callback(restarts.discard)
    finally:
        for task in list(restarts):
            task.cancel()
        codes = await asyncio.gather(*(worker.stop() for worker in workers))
    log.info("every worker stopped")
    return 0 if all(code == 0 for code in codes) else 1


async def _first_exit(workers: list[_Worker], stop: asyncio.Event) -> _Worker | None:
    """The first running worker to exit, or None once `stop` is set. Workers started again
    meanwhile (in the background, after their pause) are watched from the next second on."""
    while not stop.is_set():
        running = {
            asyncio.ensure_future(worker.process.wait()): worker
            for worker in workers
            if worker.process is not None
        }
        stopping = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {*running, stopping}, return_when=asyncio.FIRST_COMPLETED, timeout=1.0
            )
        finally:
            stopping.cancel()
            for waiting in running:
                waiting.cancel()
        for finished in done:
            if finished in running:
                return running[finished]
    return None


async def _restart_after(worker: _Worker, pause_s: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), pause_s)
    if not stop.is_set():
        await worker.start()


def _describe(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
