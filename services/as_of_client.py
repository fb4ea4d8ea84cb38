"""The service's side of the as-of worker (services/as_of_worker.py): a `ModelBuilder` that
asks the worker process to build each model, starting the process on the first as-of query
and again after it ends. Nothing of the build runs on the service's own CPU."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from events.contract.errors import ServiceUnavailable
from projections.as_of_builder import AsOfRefused
from services.settings import Settings

__all__ = ["WorkerBuilder"]

log = logging.getLogger(__name__)


class WorkerBuilder:
    def __init__(self, settings: Settings) -> None:
        self._environment = {**os.environ, **settings.environment()}
        self._process: asyncio.subprocess.Process | None = None
        self._replies: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._starting = asyncio.Lock()

    async def materialize(self, position: int, path: Path) -> int:
        process = await self._running()
        assert process.stdin is not None
        request_id = next(self._ids)
        answer = self._pending[request_id] = asyncio.get_running_loop().create_future()
        try:
            request = {"id": request_id, "position": position, "path": str(path)}
            try:
                process.stdin.write(orjson.dumps(request) + b"\n")
                await process.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                raise ServiceUnavailable(
                    "the as-of worker stopped (see the service's log); retry: the next as-of "
                    "query starts it again"
                ) from None
            reply = await answer
        finally:
            self._pending.pop(request_id, None)
        if "refused" in reply:
            raise AsOfRefused(reply["refused"])
        if "error" in reply:
            raise ServiceUnavailable(
                f"the as-of worker could not build the model at position {position}: "
                f"{reply['error']} (see the service's log); retry"
            )
        return int(reply["messages"])

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the worker exits at the end of its input
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._replies is not None:
            await self._replies

    async def _running(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._process is None or self._process.returncode is not None:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services.as_of_worker",
                    env=self._environment, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, limit=2**20,
                )  # fmt: skip
                self._replies = asyncio.create_task(self._read_replies(self._process))
                log.info("started the as-of worker (pid %d)", self._process.pid)
            return self._process

    async def _read_replies(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        with contextlib.suppress(Exception):
            while line := await process.stdout.readline():
                reply = orjson.loads(line)
                waiting = self._pending.get(reply["id"])
                if waiting is not None and not waiting.done():
                    waiting.set_result(reply)
        code = await process.wait()
        # Only the requests of this process: a restarted worker has taken new ones since.
        if self._process is process or self._process is None:
            for waiting in self._pending.values():
                if not waiting.done():
                    waiting.set_exception(
                        ServiceUnavailable(
                            f"the as-of worker exited (code {code}) before answering; "
                            "see the service's log, and retry"
                        )
                    )
        if code and self._process is process:
            log.error("the as-of worker exited with code %d; the next as-of query restarts it",
                      code)  # fmt: skip
