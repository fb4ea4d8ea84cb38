"""The failover gap: kill -9 the node that leads the event log's stream while clients create
flows, and compare the longest time without an acknowledged create with NATS's own election
time (until `$JS.API.STREAM.INFO` names a new leader), both measured in the same run."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import nats
import nats.errors
import orjson
from nats.aio.client import Client as NatsClient

from services.embedded import EmbeddedNats

__all__ = ["IN_FLIGHT", "RETRY_PAUSE_S", "Failover", "kill_the_leader", "stream_cluster"]

# Creates in flight during the failover, and how long the load runs before the kill and after
# the new leader is named: enough to see the rate before, and acknowledgements resume after.
IN_FLIGHT = 16
_BEFORE_S = 1.5
_AFTER_S = 3.0
_ELECTION_LIMIT_S = 60.0
RETRY_PAUSE_S = 0.05


@dataclass(frozen=True, slots=True)
class Failover:
    leader: str  # the killed node's server name
    new_leader: str
    election_s: float  # kill -9 until STREAM.INFO names another leader
    gap_s: float  # the longest time without an acknowledged create, around the kill
    acknowledged: int
    # Failed attempts by how they failed: a Flows-Status, or the client's exception.
    failures: dict[str, int]


async def stream_cluster(nc: NatsClient, stream: str, timeout_s: float = 0.5) -> dict[str, object]:
    """The `cluster` part of the stream's info (leader, replicas); {} while no leader answers."""
    try:
        reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=timeout_s)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return {}
    cluster: dict[str, object] = orjson.loads(reply.data).get("cluster") or {}
    return cluster


async def kill_the_leader(
    nodes: Sequence[EmbeddedNats], stream: str, create: str, run_id: str
) -> Failover:
    """Create load (`create`: the command subject) through the nodes that survive, kill -9 the
    stream leader's node, time the election and the gap."""
    names = {f"n{index}": index for index in range(len(nodes))}
    probe = await nats.connect([node.url for node in nodes], max_reconnect_attempts=1)
    try:
        leader = str((await stream_cluster(probe, stream, 5.0)).get("leader"))
    finally:
        await probe.close()
    survivors = [node.url for index, node in enumerate(nodes) if index != names[leader]]
    load_nc = await nats.connect(survivors)
    probe = await nats.connect(survivors)
    acks: list[float] = []
    failures: Counter[str] = Counter()
    stop = asyncio.Event()

    async def worker(worker_id: int) -> None:
        sent = 0
        while not stop.is_set():
            sent += 1
            body = orjson.dumps({"name": f"failover-{run_id}-{worker_id}-{sent}"})
            try:
                reply = await load_nc.request(create, body, timeout=10)
                status = (reply.headers or {}).get("Flows-Status", "no status")
            except Exception as exc:
                status = type(exc).__name__
            if status.startswith("2"):
                acks.append(time.perf_counter())
            else:
                failures[status] += 1
                # As a client would, retry after a pause: a tight loop of instant 503s would
                # only take the CPU that the election and the reconnects need.
                await asyncio.sleep(RETRY_PAUSE_S)

    workers = [asyncio.create_task(worker(i)) for i in range(IN_FLIGHT)]
    try:
        await asyncio.sleep(_BEFORE_S)  # the load's steady state before the kill
        killed_at = time.perf_counter()
        await asyncio.to_thread(nodes[names[leader]].kill)
        new_leader = await _next_leader(probe, stream, leader, killed_at)
        elected_at = time.perf_counter()
        await asyncio.sleep(_AFTER_S)  # acknowledgements resume (or the gap runs on)
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await load_nc.close()
        await probe.close()
    return Failover(
        leader=leader,
        new_leader=new_leader,
        election_s=elected_at - killed_at,
        gap_s=_longest_gap(sorted(acks), killed_at),
        acknowledged=len(acks),
        failures=dict(failures),
    )


async def _next_leader(nc: NatsClient, stream: str, old: str, killed_at: float) -> str:
    """The new leader's name, returned as soon as an answer names it. While there is no leader
    nobody answers, so the probe's timeout (0.1 s) is the measurement's resolution."""
    while time.perf_counter() - killed_at < _ELECTION_LIMIT_S:
        leader = (await stream_cluster(nc, stream, 0.1)).get("leader")
        if leader and leader != old:
            return str(leader)
        await asyncio.sleep(0.01)  # NATS announces no election to clients: ask again
    raise RuntimeError(f"no new leader of {stream} within {_ELECTION_LIMIT_S:.0f}s")


def _longest_gap(acks: list[float], killed_at: float) -> float:
    """The longest time without an acknowledgement in the span holding the kill: from the last
    ack before it to the first after it, or longer gaps after it while the cluster settles."""
    before = [t for t in acks if t <= killed_at]
    after = [t for t in acks if t > killed_at]
    if not after:
        return float("nan")
    points = [before[-1] if before else killed_at, *after]
    return max(b - a for a, b in itertools.pairwise(points))
