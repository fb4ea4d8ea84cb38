"""`flows serve --workers N` as real processes: N workers answer as one service, a worker
that dies is started again, SIGTERM stops them all with exit 0."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NatsClient

from services.embedded import EmbeddedNats
from tests.integration.wire import assert_success, call
from tests.processes import ServiceProcess, new_target


async def instances(nc: NatsClient, prefix: str, want: int, timeout_s: float = 2.0) -> set[int]:
    """The pids of this service's instances answering `$SRV.PING`: one ping, answers read
    until `want` have come or the time is up (a dead instance never answers)."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    pids: set[int] = set()
    try:
        await nc.publish("$SRV.PING.flows", b"", reply=inbox)
        deadline = time.monotonic() + timeout_s
        while len(pids) < want and (left := deadline - time.monotonic()) > 0:
            try:
                message = await subscription.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            metadata: dict[str, Any] = orjson.loads(message.data)["metadata"]
            if metadata.get("subject_prefix") == prefix:
                pids.add(int(metadata["pid"]))
    finally:
        await subscription.unsubscribe()
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_answer_as_one_and_a_dead_one_comes_back(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    target = new_target(nats_server.url, tmp_path)
    service = ServiceProcess(target, FLOWS_WORKERS="2")
    nc = await nats.connect(nats_server.url)
    try:
        await service.start()
        deadline = time.monotonic() + 30
        while len(workers := await instances(nc, target.prefix, 2)) < 2:
            assert time.monotonic() < deadline, f"not 2 workers: {workers}\n{service.log()}"
        assert service.pid not in workers  # the parent answers nothing itself
        # Each worker has its own SQLite replica, yet a plain client reads its writes.
        for i in range(20):
            created = await call(nc, target.prefix, "cmd.create", {"name": f"w-{i}"})
            assert_success(created, 201)
            read = await call(nc, target.prefix, "query.read", {"id": created.json["id"]})
            assert read.json == created.json, i
        assert {p.name for p in target.data_dir.iterdir()} >= {"worker-0", "worker-1"}

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            now = await instances(nc, target.prefix, 2)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, f"no worker came back: {now}\n{service.log()}"
        assert (workers - {victim}) <= now  # the other one kept running
        assert "exited with signal SIGKILL; starting it again" in service.log(tail=200)
        assert (await call(nc, target.prefix, "query.count", {})).json == 20

        assert await service.terminate() == 0, service.log()
        assert not [pid for pid in now if alive(pid)], "a worker outlived its parent"
    finally:
        await nc.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGKILL)  # the parent and its workers, whatever happened
