"""A NATS cluster of real nats-server processes for tests: routed together, JetStream on.

The nodes are built by the plain-processes recipe (`deploy/nodes.py`, what `python -m
deploy.local_cluster` runs), so tests exercise the topology people run: each node an
`EmbeddedNats` (tests never touch the machine's shared NATS) with its own free loopback client
port, route port and store dir, listing every other node's route, so the cluster forms whichever
nodes start first and a node stopped and started again rejoins with its data. Tests use it to
start the service before the cluster has formed, and to stop or kill nodes under a running
service.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
import nats.errors
import orjson

from deploy.nodes import cluster_nodes
from services.embedded import EmbeddedNats
from tests.processes import log_tail

__all__ = ["NatsCluster"]


class NatsCluster:
    """`size` nats-server nodes named `n0`, `n1`, ... in one cluster; none runs until started."""

    def __init__(self, base_dir: Path, size: int = 3, *, sync_interval: str | None = None) -> None:
        """`sync_interval` is JetStream's (e.g. "always": fsync before every ack, as the
        embedded server and a careful deployment run); None leaves nats-server's default."""
        self.name = f"c{uuid.uuid4().hex[:8]}"
        # By default no fsync per write: it costs a lot with three replicas on a shared 2-core
        # machine, and replication is the durability most tests are about.
        self.nodes: list[EmbeddedNats] = cluster_nodes(
            base_dir, size, self.name, sync_interval=sync_interval
        )

    # -- addresses -------------------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        """Every node's client URL, in node order."""
        return [node.url for node in self.nodes]

    @property
    def seed_list(self) -> str:
        """The URLs as FLOWS_NATS_URL takes them: comma-separated."""
        return ",".join(self.urls)

    def url(self, index: int) -> str:
        return self.nodes[index].url

    def running(self) -> list[int]:
        return [index for index, node in enumerate(self.nodes) if node.pid is not None]

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, *indexes: int) -> None:
        """Start the given nodes (all when none is given); returns once each accepts clients
        (not once the cluster has formed: see `wait_for_jetstream`)."""
        for index in indexes or range(len(self.nodes)):
            await asyncio.to_thread(self.nodes[index].start)

    async def stop(self, *indexes: int) -> None:
        """SIGTERM (nats-server shuts down cleanly, stepping down as a leader) and wait."""
        for index in indexes or range(len(self.nodes)):
            await asyncio.to_thread(self.nodes[index].stop)

    async def kill(self, *indexes: int) -> None:
        """SIGKILL, as a crashed machine would."""
        for index in indexes or range(len(self.nodes)):
            await asyncio.to_thread(self.nodes[index].kill)

    def pause(self, index: int) -> None:
        """SIGSTOP: the node hangs (a stalled VM or a long GC pause) with its sockets open."""
        pid = self.nodes[index].pid
        assert pid is not None, f"node n{index} is not running"
        os.kill(pid, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        """SIGCONT after `pause`."""
        pid = self.nodes[index].pid
        assert pid is not None, f"node n{index} is not running"
        os.kill(pid, signal.SIGCONT)

    async def wait_for_jetstream(self, replicas: int, timeout_s: float = 30.0) -> None:
        """Until a stream of `replicas` replicas can be placed: the JetStream meta group has a
        leader and at least `replicas` servers. Asked of the first running node through a
        throwaway stream's create, the only question that tests placement itself."""
        deadline = time.monotonic() + timeout_s
        probe = f"PROBE_{uuid.uuid4().hex[:8]}"
        config = {"name": probe, "subjects": [f"probe.{probe}"], "num_replicas": replicas}
        nc = await nats.connect(self.urls[self.running()[0]], allow_reconnect=False)
        try:
            while True:
                reason = await _try_create(nc, probe, config)
                if reason is None:
                    await nc.request(f"$JS.API.STREAM.DELETE.{probe}", b"", timeout=5)
                    return
                assert time.monotonic() < deadline, (
                    f"JetStream of cluster {self.name} could not place {replicas} replicas "
                    f"within {timeout_s}s: {reason}"
                )
                await asyncio.sleep(0.1)  # the cluster forms in the background: ask again
        finally:
            await nc.close()

    async def close(self) -> None:
        """Whatever happened, leave no nats-server behind."""
        await self.kill()

    def log(self, index: int, tail: int = 30) -> str:
        return log_tail(self.nodes[index].store_dir / "nats-server.log", tail)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _try_create(nc: nats.NATS, name: str, config: dict[str, object]) -> str | None:
    """None once the stream exists, else why not (JetStream's error, or no answer)."""
    try:
        reply = await nc.request(f"$JS.API.STREAM.CREATE.{name}", orjson.dumps(config), timeout=2)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        return type(exc).__name__
    error = orjson.loads(reply.data).get("error")
    return None if error is None else f"{error.get('description')} ({error.get('err_code')})"
