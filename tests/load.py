"""A steady load of creates, updates and reads from several clients of a clustered service, for
the fault tests (tests/integration/test_cluster_faults.py).

Each client has its own NATS connection, to the whole seed list with its own node first (so the
clients spread over the cluster and, as NATS prefers a queue subscriber on the client's own
server, every instance gets requests), and notices a hung server as the service does: a PING
every 2 s, gone after two unanswered. A client creates flows, updates its own and reads them
back; every command carries a `Nats-Msg-Id` and is sent again with the same id until it is
answered with something other than 503 (a timeout and a lost connection count as unanswered).
Reads check read-your-writes: a flow read after an acknowledged update shows that update.

`stop()` lets every client finish the command it is sending, so afterwards every command sent
was acknowledged, and each acknowledgement's time is known: the longest stretch with none is
what a fault cost.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import nats

from services.client import FlowsClient, Reply, ServiceUnreachable

__all__ = ["Command", "Load"]

# Above a healthy command's time on a loaded machine, below the service's own log timeout
# (5 s), so a client stuck on a dead path tries again before the service gives up on it.
REQUEST_TIMEOUT_S = 4.0


@dataclass
class Command:
    """One command as sent (with its Nats-Msg-Id) and its first non-503 reply."""

    client: int
    msg_id: str
    operation: str  # "create" | "update"
    args: tuple[Any, ...]
    reply: Reply | None = None
    acknowledged_at: float | None = None  # time.monotonic()
    failures: list[str] = field(default_factory=list)  # "503" | "unreachable", per attempt


class Load:
    def __init__(self, seeds: list[str], prefix: str, clients: int = 6) -> None:
        self.seeds = seeds
        self.prefix = prefix
        self.size = clients
        self.commands: dict[str, Command] = {}
        self.reads = 0
        self.read_failures: Counter[str] = Counter()
        # (time.monotonic(), client, what, outcome) of every attempt: for a failure's story.
        self.timeline: list[tuple[float, int, str, str]] = []
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()
        self._connections: list[nats.NATS] = []
        self._tasks: list[asyncio.Task[None]] = []

    # -- running -------------------------------------------------------------------------------
    async def start(self) -> None:
        for number in range(self.size):
            first = number % len(self.seeds)
            nc = await nats.connect(
                self.seeds[first:] + self.seeds[:first],
                dont_randomize=True,
                name=f"load-{number}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.2,  # type: ignore[arg-type]  # used as a float
                connect_timeout=1,
                ping_interval=2,
                max_outstanding_pings=2,
            )
            self._connections.append(nc)
        for number, nc in enumerate(self._connections):
            client = FlowsClient(nc, self.prefix, timeout=REQUEST_TIMEOUT_S)
            self._tasks.append(asyncio.create_task(self._client(number, client)))

    async def stop(self, timeout_s: float = 60.0) -> None:
        """Let each client finish its command (acknowledged), then close the connections."""
        self._stop.set()
        try:
            async with asyncio.timeout(timeout_s):
                outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        except TimeoutError:
            pending = {c.msg_id: c.failures for c in self.commands.values() if c.reply is None}
            raise AssertionError(f"not acknowledged within {timeout_s}s: {pending}") from None
        finally:
            for task in self._tasks:
                task.cancel()
            for nc in self._connections:
                await nc.close()
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise failed[0]

    async def until_acknowledged(self, count: int, timeout_s: float) -> None:
        """Until `count` more commands than now are acknowledged."""
        want = len(self.acknowledged_times()) + count
        async with asyncio.timeout(timeout_s):
            while len(self.acknowledged_times()) < want:
                self._check_clients()
                self._progress.clear()
                await self._progress.wait()

    # -- what happened -------------------------------------------------------------------------
    def acknowledged_times(self) -> list[float]:
        return sorted(c.acknowledged_at for c in self.commands.values() if c.acknowledged_at)

    def longest_gap(self, since: float, until: float | None = None) -> tuple[float, float]:
        """The longest stretch without an acknowledgement from `since` to the last one (or to
        `until`, counting the stretch from the last one before it), and when it began
        (seconds after `since`)."""
        times = [since, *(t for t in self.acknowledged_times() if t > since)]
        if until is not None:
            times = [t for t in times if t <= until] + [until]
        gaps = [(later - earlier, earlier - since) for earlier, later in itertools.pairwise(times)]
        return max(gaps, default=(0.0, 0.0))

    def statuses(self) -> Counter[int]:
        return Counter(c.reply.status for c in self.commands.values() if c.reply is not None)

    def failures(self) -> Counter[str]:
        return Counter(kind for c in self.commands.values() for kind in c.failures)

    # -- one client ----------------------------------------------------------------------------
    def _check_clients(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError("a load client failed") from task.exception()

    async def _client(self, number: int, client: FlowsClient) -> None:
        own: list[tuple[str, str]] = []  # (flow id, name)
        tags: dict[str, list[str]] = {}  # flow id -> its tags as last acknowledged
        for step in itertools.count():
            if self._stop.is_set():
                return
            msg_id = f"c{number}-{step}-{uuid.uuid4().hex[:8]}"
            if step % 3 == 0:
                name = f"load-{number}-{step}-{msg_id[-8:]}"
                labels = {"client": number, "step": step}
                command = Command(number, msg_id, "create", (name, [f"c{number}"], labels))
            else:
                flow_id, _ = own[step % len(own)]
                command = Command(number, msg_id, "update", (flow_id, [f"s{step}", f"c{number}"]))
            self.commands[msg_id] = command
            reply = await self._deliver(client, command)
            assert reply.status in (200, 201, 204), (command, reply)
            command.acknowledged_at = time.monotonic()
            self._progress.set()
            if command.operation == "create":
                own.append((reply.body["id"], command.args[0]))
                tags[reply.body["id"]] = list(command.args[1])
            else:
                tags[command.args[0]] = list(command.args[1])
            # Read one of our flows back: whichever instance answers, it shows our last write.
            flow_id, name = own[(step * 7) % len(own)]
            read = await self._read(number, client, flow_id)
            assert (read.body["name"], read.body["tags"]) == (name, tags[flow_id]), (flow_id, read)

    def _note(self, client: int, what: str, outcome: str) -> None:
        self.timeline.append((time.monotonic(), client, what, outcome))

    async def _deliver(self, client: FlowsClient, command: Command) -> Reply:
        delay = 0.05
        while True:
            try:
                reply = await send(client, command)
            except ServiceUnreachable as exc:
                command.failures.append("unreachable")
                self._note(command.client, command.operation, str(exc))
            else:
                self._note(command.client, command.operation, f"{reply.status} {reply.body}")
                if reply.status != 503:
                    command.reply = reply
                    return reply
                command.failures.append("503")
            # A client's retry policy (jittered backoff), not a synchronisation.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)

    async def _read(self, number: int, client: FlowsClient, flow_id: str) -> Reply:
        delay = 0.05
        while True:
            try:
                reply = await client.read(flow_id)
            except ServiceUnreachable as exc:
                self.read_failures["unreachable"] += 1
                self._note(number, "read", str(exc))
            else:
                self._note(number, "read", f"{reply.status} {reply.body}")
                if reply.status != 503:
                    assert reply.status == 200, (flow_id, reply)
                    self.reads += 1
                    return reply
                self.read_failures["503"] += 1
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)


async def send(client: FlowsClient, command: Command) -> Reply:
    if command.operation == "create":
        name, tags, labels = command.args
        return await client.create(name, tags=tags, labels=labels, msg_id=command.msg_id)
    flow_id, tags = command.args
    return await client.update(flow_id, tags=tags, msg_id=command.msg_id)
