"""`python -m benchmarks --stages cluster`: the service on a 3-node NATS cluster.

The cluster is the plain-processes recipe's (deploy/: routed nats-servers on loopback, each
fsyncing before every ack, the log an R3 stream), the instances are `flows serve` processes with
the full seed list. Measured in one run, so the ratios hold on a noisy machine:
- create, read, filter, count with 1, 2 and 3 instances, and one instance with `--workers 2`,
  each worker with its own SQLite replica and, when a PostgreSQL server is given, sharing one
  PostgreSQL model (issue 13's question: which read model for workers on one machine);
- the cost of replication: creates on an R1 stream against the R3 one, in alternating rounds;
- the failover gap: kill -9 the stream leader's node under creates (benchmarks/failover.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nats
import orjson
from nats.aio.client import Client as NatsClient

from benchmarks.failover import IN_FLIGHT as FAILOVER_IN_FLIGHT
from benchmarks.failover import Failover, kill_the_leader, wait_for_replicas
from benchmarks.loadgen import Measured, Request, compare, measure
from benchmarks.postgres import fresh_database
from benchmarks.targets import flows_requests, seed_flows
from deploy.instances import Instance, instance_environment, stop_all
from deploy.nodes import cluster_nodes

__all__ = ["ClusterResults", "cluster_stage", "print_cluster"]

OPERATIONS = ("create", "read", "filter", "count")
ONE, TWO, THREE = "1 instance", "2 instances", "3 instances"
WORKERS_SQLITE = "1 instance, --workers 2, SQLite replicas"
WORKERS_POSTGRES = "1 instance, --workers 2, shared PostgreSQL"
_IN_FLIGHT = 32
_SEED_FLOWS = 1000
_READY_TIMEOUT_S = 120.0


@dataclass
class ClusterResults:
    in_flight: int = _IN_FLIGHT
    cells: dict[str, dict[str, Measured]] = field(default_factory=dict)
    # (stream, in flight) -> (median creates/s, median p50 ms), from loadgen.compare.
    replication: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    failover: Failover | None = None
    notes: list[str] = field(default_factory=list)


class _Deployment:
    """The recipe's nodes, and the instances of the cell being measured."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes = cluster_nodes(workdir / "nats", 3, "bench")
        self.seed_list = ",".join(node.url for node in self.nodes)
        self.instances: list[Instance] = []

    async def add(
        self,
        name: str,
        *,
        replicas: int = 3,
        workers: int = 1,
        database_url: str | None = None,
        **env: str,
    ) -> Instance:
        environment = instance_environment(
            self.seed_list,
            self.workdir / name,
            replicas=replicas,
            workers=workers,
            database_url=database_url,
            extra=env,
        )
        instance = Instance(name, environment, self.workdir / f"{name}.log")
        instance.start()
        self.instances.append(instance)
        await asyncio.to_thread(instance.wait_ready, _READY_TIMEOUT_S)
        return instance

    async def stop(self, *instances: Instance) -> None:
        """Stop the given instances (all when none is given): each drains and exits."""
        chosen = list(instances or self.instances)
        await asyncio.to_thread(stop_all, chosen)
        self.instances = [i for i in self.instances if i not in chosen]

    def close(self) -> None:
        for instance in self.instances:
            instance.kill()
        for node in self.nodes:
            node.stop()


async def cluster_stage(args: argparse.Namespace, workdir: Path) -> ClusterResults:
    results = ClusterResults()
    deployment = _Deployment(workdir / "cluster")
    try:
        for node in deployment.nodes:
            await asyncio.to_thread(node.start)
        _note(f"3-node cluster up: {deployment.seed_list}")
        await _run_cells(args, deployment, results)
    finally:
        deployment.close()
    return results


async def _run_cells(
    args: argparse.Namespace, deployment: _Deployment, results: ClusterResults
) -> None:
    await deployment.add("flows-1")
    r1 = await deployment.add(
        "flows-r1", replicas=1, FLOWS_STREAM="FLOWSR1", FLOWS_SUBJECT_PREFIX="r1"
    )
    nc = await nats.connect(deployment.seed_list.split(","))
    try:
        ids = await seed_flows(nc, _SEED_FLOWS)
        cases = {"R1": _creates(nc, "r1"), "R3": _creates(nc, "flows")}
        rounds = 1 if args.quick else 2
        results.replication = await compare(cases, args.seconds, rounds, (1, _IN_FLIGHT))
        await deployment.stop(r1)

        results.cells[ONE] = await _cell(nc, ids, args.seconds, ONE)
        for name, label in (("flows-2", TWO), ("flows-3", THREE)):
            await _caught_up(nc, await deployment.add(name))
            results.cells[label] = await _cell(nc, ids, args.seconds, label)

        _note(f"failover: kill -9 the stream leader's node, {FAILOVER_IN_FLIGHT} creates in flight")
        failover, killed = await kill_the_leader(
            deployment.nodes, "FLOWS", "flows.cmd.create", uuid.uuid4().hex[:8]
        )
        results.failover = failover
        _note(f"failover: {failover}")
        await deployment.stop()
        await asyncio.to_thread(deployment.nodes[killed].start)
        await wait_for_replicas(nc, "FLOWS", 3, 120)

        workers = await deployment.add("workers-sqlite", workers=2)
        await _caught_up(nc, workers)
        results.cells[WORKERS_SQLITE] = await _cell(nc, ids, args.seconds, WORKERS_SQLITE)
        await deployment.stop()
        if args.postgres_url:
            async with fresh_database(args.postgres_url) as database_url:
                workers = await deployment.add("workers-pg", workers=2, database_url=database_url)
                await _caught_up(nc, workers)
                results.cells[WORKERS_POSTGRES] = await _cell(
                    nc, ids, args.seconds, WORKERS_POSTGRES
                )
                await deployment.stop()
        else:
            results.notes.append(
                "shared PostgreSQL not measured: give --postgres-url (or FLOWS_TEST_POSTGRES_URL)"
            )
    finally:
        await nc.close()


def _creates(nc: NatsClient, prefix: str) -> Request:
    """Creates of new names on `prefix`'s service (numbers never repeat across calls)."""
    run_id, numbers = uuid.uuid4().hex[:8], itertools.count()

    async def create(_: int) -> bool:
        body = orjson.dumps({"name": f"r-{run_id}-{next(numbers)}"})
        reply = await nc.request(f"{prefix}.cmd.create", body, timeout=30)
        return (reply.headers or {}).get("Flows-Status", "").startswith("2")

    return create


async def _cell(nc: NatsClient, ids: list[str], seconds: float, label: str) -> dict[str, Measured]:
    # A run id per cell: every cell's creates make new flows.
    requests = flows_requests(nc, ids, uuid.uuid4().hex[:8])
    found = {}
    for operation in OPERATIONS:
        found[operation] = measured = await measure(requests[operation], seconds, _IN_FLIGHT)
        _note(
            f"{label} {operation} x{_IN_FLIGHT}: {measured.rate:.0f}/s "
            f"p50 {measured.p50_ms:.2f} ms p99 {measured.p99_ms:.2f} ms errors {measured.errors}"
        )
    return found


async def _caught_up(nc: NatsClient, instance: Instance, timeout_s: float = 120.0) -> None:
    """Until the new instance's read model(s) hold the log's end: a cell must not measure an
    instance still folding the log (its linearizable queries would wait for it)."""
    info = await nc.request("$JS.API.STREAM.INFO.FLOWS", b"", timeout=5)
    end = int(orjson.loads(info.data)["state"]["last_seq"])
    data_dir = Path(instance.environment["FLOWS_DATA_DIR"])
    async with asyncio.timeout(timeout_s):
        if "FLOWS_DATABASE_URL" in instance.environment:
            # One shared model: a query that must see the end is answered once it is applied.
            headers = {"Flows-Min-Position": str(end), "Flows-Wait-Ms": str(int(timeout_s * 1000))}
            await nc.request("flows.query.count", b"{}", headers=headers, timeout=timeout_s)
            return
        while True:
            if min(_checkpoints(data_dir, instance.workers)) >= end:
                return
            await asyncio.sleep(0.1)  # the projector tells nobody outside: look again


def _checkpoints(data_dir: Path, workers: int) -> list[int]:
    """The checkpoint of each SQLite replica of an instance (0 before its first batch)."""
    paths = (
        [data_dir / "flows.db"]
        if workers == 1
        else [data_dir / f"worker-{i}" / "flows.db" for i in range(workers)]
    )
    found = []
    for path in paths:
        position = 0
        uri = f"file:{path}?mode=ro"
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(uri, uri=True)) as db,
        ):
            row = db.execute("SELECT position FROM projection_checkpoint").fetchone()
            position = int(row[0]) if row else 0
        found.append(position)
    return found


# -- printing --------------------------------------------------------------------------------
def _note(text: str) -> None:
    print(f"  .. {text}", flush=True)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def print_cluster(results: ClusterResults) -> None:
    """Markdown tables of the cluster stage, every ratio within this run."""
    base = results.cells.get(ONE, {})
    print(f"\nCluster: 3 nats-servers (fsync before every ack), R3 stream; "
          f"{results.in_flight} requests in flight.\n")  # fmt: skip
    print("| instances | operation | req/s | p50 ms | p99 ms | errors | vs 1 instance |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for label, cell in results.cells.items():
        for operation, m in cell.items():
            one = base.get(operation)
            print(f"| {label} | {operation} | {m.rate:.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} "
                  f"| {m.errors} | {_ratio(m.rate, one.rate) if one else '-'} |")  # fmt: skip
    sqlite, postgres = results.cells.get(WORKERS_SQLITE), results.cells.get(WORKERS_POSTGRES)
    if sqlite and postgres:
        print("\n| --workers 2 | SQLite replicas req/s | p50 ms | shared PostgreSQL req/s "
              "| p50 ms | PostgreSQL/SQLite |")  # fmt: skip
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for operation in OPERATIONS:
            s, p = sqlite[operation], postgres[operation]
            print(f"| {operation} | {s.rate:.0f} | {s.p50_ms:.2f} | {p.rate:.0f} "
                  f"| {p.p50_ms:.2f} | {_ratio(p.rate, s.rate)} |")  # fmt: skip
    if results.replication:
        print("\n| creates | in flight | R1 creates/s | p50 ms | R3 creates/s | p50 ms "
              "| R3/R1 throughput | R3/R1 p50 |")  # fmt: skip
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for flight in sorted({flight for _, flight in results.replication}):
            r1, r3 = results.replication["R1", flight], results.replication["R3", flight]
            print(f"| one instance | {flight} | {r1[0]:.0f} | {r1[1]:.2f} | {r3[0]:.0f} "
                  f"| {r3[1]:.2f} | {_ratio(r3[0], r1[0])} | {_ratio(r3[1], r1[1])} |")  # fmt: skip
    failover = results.failover
    if failover:
        print(f"\n| failover (kill -9 of the stream leader's node, 3 instances, "
              f"{FAILOVER_IN_FLIGHT} creates in flight) | value |")  # fmt: skip
        print("| --- | ---: |")
        print(f"| leader killed / new leader | {failover.leader} / {failover.new_leader} |")
        print(f"| NATS election: kill until STREAM.INFO names a new leader "
              f"| {failover.election_s * 1000:.0f} ms |")  # fmt: skip
        print(f"| longest gap without an acknowledged create | {failover.gap_s * 1000:.0f} ms |")
        print(f"| gap / election | {_ratio(failover.gap_s, failover.election_s)} |")
        print(f"| creates acknowledged / failed during the run "
              f"| {failover.acknowledged} / {failover.failed} |")  # fmt: skip
    for note in results.notes:
        print(f"\n{note}")
