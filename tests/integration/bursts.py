"""A burst of mixed commands from several clients, each sent with a `Nats-Msg-Id`, and the checks
that every acknowledged command took effect exactly once (for the fault-injection tests).

Each worker creates flows and updates its own; a command is "acknowledged" once a 2xx reply came
back for it. Workers either give up at the first unreachable service (a crash test: the fate of
the command in flight is then unknown) or retry the same command with the same id until it is
acknowledged (a broker-restart test: what a careful client does).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.client import FlowsClient, Reply, ServiceUnreachable

__all__ = ["Burst", "Sent", "assert_exactly_once", "command_ids", "log_events", "workers"]


@dataclass
class Sent:
    """A command sent with a Nats-Msg-Id, and its reply once one came back."""

    operation: str
    args: tuple[Any, ...]
    reply: Reply | None = None
    # What the attempts before the acknowledged one met: "503", "unreachable".
    failures: list[str] = field(default_factory=list)


async def send(client: FlowsClient, msg_id: str, sent: Sent) -> Reply:
    if sent.operation == "create":
        name, tags, labels = sent.args
        return await client.create(name, tags=tags, labels=labels, msg_id=msg_id)
    flow_id, tags = sent.args
    return await client.update(flow_id, tags=tags, msg_id=msg_id)


async def log_events(client: FlowsClient) -> list[dict[str, Any]]:
    """Every event of the log, in log order, through the audit subject."""
    return [event async for event in client.iter_events()]


def command_ids(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(event["metadata"].get("command_id") for event in events)


class Burst:
    def __init__(self, client: FlowsClient, *, retry: bool) -> None:
        self.client = client
        self.retry = retry
        self.sent: dict[str, Sent] = {}
        self.stop = asyncio.Event()
        self.progress = asyncio.Event()  # set on every acknowledgement
        self.acknowledged_at: list[float] = []  # time.monotonic() of each acknowledgement
        self.tasks: list[asyncio.Task[None]] = []  # the workers, once `workers` started them

    async def halt(self) -> None:
        """Stop the workers and wait until none has a command in flight: a command answered
        while the log is being read for a check would be acknowledged but not yet seen."""
        self.stop.set()
        if self.tasks:
            await asyncio.wait(self.tasks)

    @property
    def acknowledged(self) -> dict[str, Sent]:
        return {msg_id: s for msg_id, s in self.sent.items() if s.reply is not None}

    @property
    def unknown(self) -> dict[str, Sent]:
        return {msg_id: s for msg_id, s in self.sent.items() if s.reply is None}

    async def until_acknowledged(self, count: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.acknowledged) < count:
                self.progress.clear()
                await self.progress.wait()

    async def worker(self, number: int) -> None:
        own: list[str] = []
        for step in itertools.count():
            if self.stop.is_set():
                return
            msg_id = f"w{number}-{step}-{uuid.uuid4().hex[:8]}"
            if step % 3 == 0 or not own:
                labels = {"worker": number, "step": step}
                command = Sent("create", (f"burst-{number}-{step}", [f"w{number}"], labels))
            else:
                command = Sent("update", (own[step % len(own)], [f"s{step}", f"w{number}"]))
            self.sent[msg_id] = command
            if not await self._deliver(msg_id, command):
                return
            reply = command.reply
            assert reply is not None and reply.ok, (msg_id, command)
            if command.operation == "create":
                own.append(reply.body["id"])
            self.acknowledged_at.append(time.monotonic())
            self.progress.set()

    async def _deliver(self, msg_id: str, command: Sent) -> bool:
        """Send until acknowledged (True), or give up (False) when not retrying or stopped."""
        delay = 0.05
        while True:
            try:
                reply = await send(self.client, msg_id, command)
            except ServiceUnreachable:
                command.failures.append("unreachable")
            else:
                if reply.status != 503:
                    command.reply = reply
                    return True
                command.failures.append("503")
            if not self.retry or self.stop.is_set():
                return False
            # A client's retry policy (jittered backoff), not a synchronisation.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)


@contextlib.asynccontextmanager
async def workers(burst: Burst, count: int = 6) -> AsyncIterator[list[asyncio.Task[None]]]:
    """`count` workers of the burst; on exit they are stopped and none may have failed."""
    tasks = [asyncio.create_task(burst.worker(n)) for n in range(count)]
    burst.tasks = tasks
    try:
        yield tasks
    finally:
        burst.stop.set()
        for task in tasks:
            if not task.done():
                task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        failures = [o for o in outcomes if not isinstance(o, asyncio.CancelledError | None)]
        assert not failures, failures


async def assert_exactly_once(client: FlowsClient, burst: Burst) -> list[dict[str, Any]]:
    """Every acknowledged command is in the log once; retried with its id, each command gets
    its original reply (acknowledged) or takes effect once (unknown). Returns the log's events.
    The workers are halted first: the log is read with no command in flight."""
    await burst.halt()
    counts = command_ids(await log_events(client))
    for msg_id, command in burst.acknowledged.items():
        assert counts[msg_id] == 1, (msg_id, command, counts[msg_id])
    for msg_id, command in burst.unknown.items():
        assert counts[msg_id] <= 1, (msg_id, command, counts[msg_id])

    sent = burst.sent
    again = await asyncio.gather(*(send(client, m, s) for m, s in sent.items()))
    retried = dict(zip(sent, again, strict=True))
    for msg_id, command in burst.acknowledged.items():
        original, repeated = command.reply, retried[msg_id]
        assert original is not None
        assert (repeated.status, repeated.body, repeated.position) == (
            original.status,
            original.body,
            original.position,
        ), (msg_id, command.operation)
    for msg_id in burst.unknown:
        assert retried[msg_id].ok, (msg_id, retried[msg_id])

    events = await log_events(client)
    counts = command_ids(events)
    assert all(counts[m] == 1 for m in sent), {m: counts[m] for m in sent if counts[m] != 1}
    return events
