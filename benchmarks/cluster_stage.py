"""`python -m benchmarks --stages cluster`: the service on a 3-node NATS cluster.

The cluster is the plain-processes recipe's (deploy/: routed nats-servers on loopback, each
fsyncing before every ack), the instances `flows serve` processes given the full seed list.
Every topology runs at once, each on a subject prefix and R3 stream of its own, so that the
cases can be measured in alternating rounds (an idle topology costs next to nothing) and machine
noise falls on all of them alike; every ratio printed is within this run:
- create, read, filter, count with 1, 2 and 3 instances, and one instance with `--workers 2`,
  its workers each with a SQLite replica, or (with a PostgreSQL server) sharing one PostgreSQL
  model: issue 13's question of which read model suits workers on one machine;
- replication's cost: creates on an R1 stream against the R3 one;
- the failover gap: kill -9 the stream leader's node under creates (benchmarks/failover.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import orjson
from nats.aio.client import Client as NatsClient

from benchmarks.failover import IN_FLIGHT as FAILOVER_IN_FLIGHT
from benchmarks.failover import RETRY_PAUSE_S, Failover, kill_the_leader
from benchmarks.loadgen import Measured, Request, measure, measure_rounds
from benchmarks.postgres import fresh_database
from benchmarks.targets import flows_requests, seed_flows
from deploy.instances import Instance, instance_environment, stop_all
from deploy.nodes import cluster_nodes

__all__ = ["ClusterResults", "cluster_stage", "print_cluster"]

OPERATIONS = ("create", "read", "filter", "count")
_IN_FLIGHT = 32
_SEED_FLOWS = 1000
_READY_TIMEOUT_S = 120.0
_WARM_UP_S = 0.5


@dataclass(frozen=True, slots=True)
class Topology:
    """Instances of the service on a subject prefix and stream of their own."""

    label: str
    prefix: str
    instances: int = 1
    workers: int = 1
    postgres: bool = False
    replicas: int = 3

    @property
    def stream(self) -> str:
        return f"B{self.prefix.upper()}"


ONE = Topology("1 instance", "one")
SCALING = (
    ONE,
    Topology("2 instances", "two", instances=2),
    Topology("3 instances", "three", instances=3),
    Topology("1 instance, --workers 2, SQLite replicas", "wsqlite", workers=2),
    Topology("1 instance, --workers 2, shared PostgreSQL", "wpg", workers=2, postgres=True),
)
THREE, WORKERS_SQLITE, WORKERS_POSTGRES = SCALING[2], SCALING[3], SCALING[4]
R1 = Topology("1 instance, R1 stream", "rone", replicas=1)


@dataclass
class ClusterResults:
    in_flight: int = _IN_FLIGHT
    rounds: int = 0
    # (topology label, operation) -> medians of the rounds at `in_flight`.
    cells: dict[tuple[str, str], Measured] = field(default_factory=dict)
    # ("R1" | "R3", in flight) -> creates.
    replication: dict[tuple[str, int], Measured] = field(default_factory=dict)
    failover: Failover | None = None
    notes: list[str] = field(default_factory=list)


async def cluster_stage(args: argparse.Namespace, workdir: Path) -> ClusterResults:
    results = ClusterResults(rounds=1 if args.quick else 2)
    base = workdir / "cluster"
    nodes = cluster_nodes(base / "nats", 3, "bench")
    seed_list = ",".join(node.url for node in nodes)
    instances: list[Instance] = []
    try:
        for node in nodes:
            await asyncio.to_thread(node.start)
        _note(f"3-node cluster up: {seed_list}")
        async with _postgres(args.postgres_url, results) as database_url:
            topologies = [t for t in (*SCALING, R1) if database_url or not t.postgres]
            for topology in topologies:
                instances += _start(topology, seed_list, base, database_url)
            for instance in instances:
                await asyncio.to_thread(instance.wait_ready, _READY_TIMEOUT_S)
            _note(f"{len(instances)} instances ready: {', '.join(t.label for t in topologies)}")
            # nats-py reports a lost server on stderr by default; losing one is the point here.
            nc = await nats.connect(seed_list.split(","), error_cb=_quiet)
            try:
                await _measure(args, nc, topologies, results)
                _note(f"failover: kill -9 the leader of {THREE.label}'s stream")
                results.failover = await kill_the_leader(
                    nodes, THREE.stream, f"{THREE.prefix}.cmd.create", uuid.uuid4().hex[:8]
                )
            finally:
                await nc.close()
            await asyncio.to_thread(stop_all, instances)
    finally:
        for instance in instances:
            instance.kill()
        for node in nodes:
            node.stop()
    return results


@contextlib.asynccontextmanager
async def _postgres(server_url: str | None, results: ClusterResults) -> AsyncIterator[str | None]:
    if not server_url:
        results.notes.append(
            "Shared PostgreSQL not measured: give --postgres-url (or FLOWS_TEST_POSTGRES_URL)."
        )
        yield None
        return
    async with fresh_database(server_url) as database_url:
        yield database_url


def _start(
    topology: Topology, seed_list: str, base: Path, database_url: str | None
) -> list[Instance]:
    started = []
    for number in range(1, topology.instances + 1):
        name = f"{topology.prefix}-{number}"
        environment = instance_environment(
            seed_list,
            base / name,
            replicas=topology.replicas,
            workers=topology.workers,
            database_url=database_url if topology.postgres else None,
            extra={"FLOWS_SUBJECT_PREFIX": topology.prefix, "FLOWS_STREAM": topology.stream},
        )
        instance = Instance(name, environment, base / f"{name}.log")
        instance.start()
        started.append(instance)
    return started


async def _measure(
    args: argparse.Namespace,
    nc: NatsClient,
    topologies: list[Topology],
    results: ClusterResults,
) -> None:
    cases: dict[str, Request] = {}
    where: dict[str, tuple[str, str]] = {}
    for topology in topologies:
        if topology is R1:
            continue
        ids = await seed_flows(nc, _SEED_FLOWS, topology.prefix)
        requests = flows_requests(nc, ids, uuid.uuid4().hex[:8], topology.prefix)
        for operation in OPERATIONS:
            name = f"{topology.label}: {operation}"
            cases[name], where[name] = requests[operation], (topology.label, operation)
    # One unreported pass first: right after seeding, replicas are still folding the seeds
    # (and caches are cold), which would fall on whichever case comes first.
    for request in cases.values():
        await measure(request, _WARM_UP_S, _IN_FLIGHT)
    _note(f"seeded {_SEED_FLOWS} flows per topology; {results.rounds} rounds of every case")
    figures = await measure_rounds(cases, args.seconds, results.rounds, (_IN_FLIGHT,), _progress)
    results.cells = {where[name]: measured for (name, _), measured in figures.items()}
    replication = {"R1": _creates(nc, R1.prefix), "R3": _creates(nc, ONE.prefix)}
    results.replication = await measure_rounds(
        replication, args.seconds, results.rounds, (1, _IN_FLIGHT), _progress
    )


def _creates(nc: NatsClient, prefix: str) -> Request:
    """Creates of new names on `prefix`'s service (numbers never repeat across calls)."""
    run_id, numbers = uuid.uuid4().hex[:8], itertools.count()

    async def create(_: int) -> bool:
        body = orjson.dumps({"name": f"r-{run_id}-{next(numbers)}"})
        reply = await nc.request(f"{prefix}.cmd.create", body, timeout=30)
        return (reply.headers or {}).get("Flows-Status", "").startswith("2")

    return create


async def _quiet(_: Exception) -> None:
    return None


# -- printing --------------------------------------------------------------------------------
def _note(text: str) -> None:
    print(f"  .. {text}", flush=True)


def _progress(name: str, flight: int, m: Measured) -> None:
    _note(f"{name} x{flight}: {m.rate:.0f}/s p50 {m.p50_ms:.2f} ms p99 {m.p99_ms:.2f} ms "
          f"errors {m.errors}")  # fmt: skip


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def print_cluster(results: ClusterResults) -> None:
    """Markdown tables of the cluster stage, every ratio within this run."""
    print(f"\nCluster: 3 nats-servers (fsync before every ack), R3 streams, {results.in_flight} "
          f"requests in flight, medians of {results.rounds} alternating rounds.\n")  # fmt: skip
    print("| topology | operation | req/s | p50 ms | p99 ms | errors | vs 1 instance |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for (label, operation), m in results.cells.items():
        one = results.cells.get((ONE.label, operation))
        print(f"| {label} | {operation} | {m.rate:.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} "
              f"| {m.errors} | {_ratio(m.rate, one.rate) if one else '-'} |")  # fmt: skip
    if (WORKERS_POSTGRES.label, "read") in results.cells:
        print("\n| --workers 2 | SQLite replicas req/s | p50 ms | shared PostgreSQL req/s "
              "| p50 ms | PostgreSQL/SQLite |")  # fmt: skip
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for operation in OPERATIONS:
            s = results.cells[WORKERS_SQLITE.label, operation]
            p = results.cells[WORKERS_POSTGRES.label, operation]
            print(f"| {operation} | {s.rate:.0f} | {s.p50_ms:.2f} | {p.rate:.0f} "
                  f"| {p.p50_ms:.2f} | {_ratio(p.rate, s.rate)} |")  # fmt: skip
    if results.replication:
        print("\n| creates, 1 instance | in flight | R1 creates/s | p50 ms | R3 creates/s "
              "| p50 ms | R3/R1 throughput | R3/R1 p50 |")  # fmt: skip
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for flight in sorted({flight for _, flight in results.replication}):
            r1, r3 = results.replication["R1", flight], results.replication["R3", flight]
            print(f"| | {flight} | {r1.rate:.0f} | {r1.p50_ms:.2f} | {r3.rate:.0f} "
                  f"| {r3.p50_ms:.2f} | {_ratio(r3.rate, r1.rate)} "
                  f"| {_ratio(r3.p50_ms, r1.p50_ms)} |")  # fmt: skip
    failover = results.failover
    if failover:
        print(f"\n| failover: kill -9 of the stream leader's node, {THREE.label}, "
              f"{FAILOVER_IN_FLIGHT} creates in flight | value |")  # fmt: skip
        print("| --- | ---: |")
        print(f"| leader killed / new leader | {failover.leader} / {failover.new_leader} |")
        print(f"| NATS election: kill until STREAM.INFO names a new leader "
              f"| {failover.election_s * 1000:.0f} ms |")  # fmt: skip
        print(f"| longest gap without an acknowledged create | {failover.gap_s * 1000:.0f} ms |")
        print(f"| gap / election | {_ratio(failover.gap_s, failover.election_s)} |")
        failed = ", ".join(f"{n} x {why}" for why, n in failover.failures.items()) or "none"
        print(f"| creates acknowledged during the run | {failover.acknowledged} |")
        print(f"| failed attempts (each retried after {RETRY_PAUSE_S * 1000:.0f} ms) "
              f"| {failed} |")  # fmt: skip
    for note in results.notes:
        print(f"\n{note}")
