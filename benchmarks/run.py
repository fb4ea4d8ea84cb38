"""The flows service's figures beside Prefect 3.9.1 on SQLite and a bare nats-py echo.

    .venv/bin/python -m benchmarks [--seconds 2] [--no-prefect] [--quick]

Starts everything it needs on loopback in a temp dir: two nats-servers on free ports (one as the
service ships it, fsync before every ack; one with nats-server's default 2-minute fsync, only for
filling streams with a million messages fast), one `flows serve`, an echo responder, and — when
the `bench` extra is installed — `prefect server start` on SQLite. Every figure is measured in
this run, so the ratios hold on a noisy machine. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NatsClient

from benchmarks import log_stages
from benchmarks.cluster_stage import ClusterResults, cluster_stage, print_cluster
from benchmarks.loadgen import Measured, measure, percentile
from benchmarks.mixed_load import TARGET as MIXED_TARGET
from benchmarks.mixed_load import MixedResults, mixed_stage, print_mixed
from benchmarks.prefect_server import prefect_cli, start_prefect
from benchmarks.processes import (
    Child,
    peak_rss_mb,
    start_echo,
    start_service,
    wait_for_answer,
)
from benchmarks.read_model import ReadModelSeeder
from benchmarks.synthetic import flow_messages
from benchmarks.targets import (
    COUNT_BODY,
    FILTER_BODY,
    OPERATIONS,
    echo_request,
    flows_requests,
    prefect_requests,
    seed_flows,
    seed_prefect,
)
from services.embedded import EmbeddedNats
from services.nats_connection import connect_nats
from services.settings import Settings

_ECHO_SUBJECT = "bench.echo"
_SEED_FLOWS = 1000
# Prefect 3.9.1 on SQLite as measured on this machine kind, for when it cannot run here.
_PREFECT_REFERENCE = {"create": 110, "read": 250, "filter": 30, "count": 120, "update": 90}


@dataclass
class Results:
    flights: tuple[int, ...]
    flows: dict[tuple[str, int], Measured] = field(default_factory=dict)
    # The same service as `flows serve --workers 2` (each worker with its own SQLite replica).
    workers2: dict[tuple[str, int], Measured] = field(default_factory=dict)
    prefect: dict[tuple[str, int], Measured] = field(default_factory=dict)
    echo: dict[int, Measured] = field(default_factory=dict)
    prefect_note: str = ""
    lag: tuple[float, float] = (math.nan, math.nan)
    projector: tuple[int, float] = (0, math.nan)  # messages, seconds
    projector_events: int = 0  # of those messages, events (the rest are name markers)
    rebuilds: list[tuple[int, int, float]] = field(default_factory=list)  # messages, events, s
    scaling: list[tuple[int, float, Measured, Measured, float]] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    cluster: ClusterResults | None = None
    mixed: MixedResults | None = None


async def _connect(url: str) -> NatsClient:
    return await nats.connect(url, max_reconnect_attempts=1)


# -- request-reply ---------------------------------------------------------------------------
async def request_reply(args: argparse.Namespace, workdir: Path, results: Results) -> None:
    server = EmbeddedNats(workdir / "nats")  # as `flows serve` ships it (fsync before acks)
    server.start()
    children: list[Child] = []
    try:
        service = start_service(server.url, workdir / "service")
        children.append(service)
        children.append(start_echo(server.url, _ECHO_SUBJECT))
        nc, echo_nc = await _connect(server.url), await _connect(server.url)
        await wait_for_answer(nc, "flows.query.count", b"{}", service)
        ids = await seed_flows(nc, _SEED_FLOWS)
        run_id = uuid.uuid4().hex[:8]
        for flight in results.flights:
            results.echo[flight] = await measure(
                echo_request(echo_nc, _ECHO_SUBJECT, ids), args.seconds, flight
            )
            _progress(f"echo x{flight}", results.echo[flight])
        ours = flows_requests(nc, ids, run_id)
        for operation in OPERATIONS:
            for flight in results.flights:
                measured = await measure(ours[operation], args.seconds, flight)
                results.flows[operation, flight] = measured
                _progress(f"flows {operation} x{flight}", measured)
        results.lag = await _lag_under_load(nc, echo_nc, run_id, args.seconds)
        results.rss["service after the request-reply run"] = peak_rss_mb(service.pid)
        service.stop()
        if args.workers2:
            await _workers2(args, server.url, nc, ids, workdir, results, children)
        await nc.close()
        await echo_nc.close()
    finally:
        for child in children:
            child.stop()
        server.stop()
    await _prefect(args, workdir, results)


async def _workers2(
    args: argparse.Namespace,
    url: str,
    nc: NatsClient,
    ids: list[str],
    workdir: Path,
    results: Results,
    children: list[Child],
) -> None:
    """The same operations against `flows serve --workers 2` on the same stream: two processes
    in one queue group, each folding the log into its own SQLite replica."""
    service = start_service(url, workdir / "service-workers2", "--workers", "2")
    children.append(service)
    await wait_for_answer(nc, "flows.query.count", b"{}", service, timeout_s=120)
    ours = flows_requests(nc, ids, uuid.uuid4().hex[:8])
    for operation in OPERATIONS:
        for flight in (f for f in results.flights if f >= 32):
            measured = await measure(ours[operation], args.seconds, flight)
            results.workers2[operation, flight] = measured
            _progress(f"flows --workers 2 {operation} x{flight}", measured)


async def _lag_under_load(
    nc: NatsClient, probe_nc: NatsClient, run_id: str, seconds: float
) -> tuple[float, float]:
    """Creates at 64 in flight; meanwhile, one at a time, how long after a create's reply a
    query that asks for its position (Flows-Min-Position) is answered: the read model's lag."""
    latest: list[tuple[int, float]] = [(0, time.perf_counter())]
    lags: list[float] = []
    stop = time.perf_counter() + seconds

    async def create(i: int) -> bool:
        reply = await nc.request(
            "flows.cmd.create", orjson.dumps({"name": f"lag-{run_id}-{i}"}), timeout=30
        )
        position = int((reply.headers or {}).get("Flows-Position", "0"))
        if position > latest[-1][0]:
            latest.append((position, time.perf_counter()))
        return True

    async def probe() -> None:
        while time.perf_counter() < stop:
            position, replied = latest[-1]
            if position:
                await probe_nc.request(
                    "flows.query.count",
                    b"{}",
                    headers={"Flows-Min-Position": str(position), "Flows-Wait-Ms": "30000"},
                    timeout=30,
                )
                lags.append(time.perf_counter() - replied)
            await asyncio.sleep(0.01)

    await asyncio.gather(measure(create, seconds, 64), probe())
    lags.sort()
    return percentile(lags, 0.5) * 1000, percentile(lags, 0.99) * 1000


async def _prefect(args: argparse.Namespace, workdir: Path, results: Results) -> None:
    cli = prefect_cli()
    if args.no_prefect or cli is None:
        results.prefect_note = (
            "Prefect not measured (--no-prefect)" if args.no_prefect else
            "Prefect not measured: not installed; `.venv/bin/pip install -e '.[bench]'`"
        )  # fmt: skip
        return
    import httpx

    try:
        child, api = start_prefect(cli, workdir / "prefect")
    except RuntimeError as exc:
        results.prefect_note = f"Prefect not measured: {exc}"
        return
    try:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(base_url=api, limits=limits, timeout=60) as client:
            ids = await seed_prefect(client, _SEED_FLOWS)
            theirs = prefect_requests(client, ids, uuid.uuid4().hex[:8])
            for operation in OPERATIONS:
                for flight in results.flights:
                    measured = await measure(theirs[operation], args.seconds, flight)
                    results.prefect[operation, flight] = measured
                    _progress(f"prefect {operation} x{flight}", measured)
        results.rss["Prefect server after its run"] = peak_rss_mb(child.pid)
        results.prefect_note = "Prefect 3.9.1 server on SQLite, measured in this run"
    except httpx.HTTPError as exc:
        results.prefect_note = (
            f"Prefect measured only in part: {type(exc).__name__} {exc} "
            f"(its log: {workdir / 'prefect' / 'server.log'})"
        )
    finally:
        child.stop()


# -- the read model at scale -----------------------------------------------------------------
async def read_model_scaling(args: argparse.Namespace, workdir: Path, results: Results) -> None:
    server = EmbeddedNats(workdir / "nats-scaling")
    server.start()
    seeder = ReadModelSeeder(workdir / "scaling.db")
    try:
        for size in args.sizes:
            rate = await seeder.grow_to(size)
            _note(f"read model seeded to {size} flows ({rate:.0f} flows/s, rows inserted directly)")
            # A stream of its own, empty: the service serves the seeded model as it is.
            service = start_service(
                server.url, workdir / f"scaling-{size}", FLOWS_DATABASE_URL=seeder.url,
                FLOWS_STREAM="SCALING",
            )  # fmt: skip
            try:
                nc = await _connect(server.url)
                await wait_for_answer(
                    nc, "flows.query.count", b"{}", service, timeout_s=120, headers=_EVENTUAL
                )
                filtered = await measure(_query(nc, "flows.query.filter", FILTER_BODY), 2.0, 1)
                counted = await measure(_query(nc, "flows.query.count", COUNT_BODY), 2.0, 1)
                await nc.close()
                results.scaling.append((size, rate, filtered, counted, peak_rss_mb(service.pid)))
                _progress(f"filter over {size}", filtered)
                _progress(f"count over {size}", counted)
            finally:
                service.stop()
    finally:
        await seeder.close()
        server.stop()


# The seeded model is ahead of its (empty) log, which a linearizable query rightly refuses as a
# stale log end: these queries ask for what the model holds.
_EVENTUAL = {"Flows-Consistency": "eventual"}


def _query(nc: NatsClient, subject: str, body: dict[str, Any]) -> Any:
    payload = orjson.dumps(body)

    async def call(_: int) -> bool:
        reply = await nc.request(subject, payload, timeout=60, headers=_EVENTUAL)
        return bool((reply.headers or {}).get("Flows-Status", "") == "200")

    return call


# -- the log: projector and rebuild ----------------------------------------------------------
async def log_rates(args: argparse.Namespace, workdir: Path, results: Results) -> None:
    # nats-server's default fsync interval: these stages measure reading the log, not writing.
    server = EmbeddedNats(workdir / "nats-bulk", sync_interval=None)
    server.start()
    try:
        # The projector reads through the kind of connection `flows serve` gives it.
        nc = await connect_nats(Settings(nats_url=server.url), "bench-log", retry=False)
        from events.contract.subjects import Subjects

        subjects, flows, stream = Subjects(), 0, "BULK"
        for size in args.rebuild_sizes:
            # `size` events: 1.25 a flow (a create each, an update for every fourth), in ~2.25
            # messages a flow (the create's name marker too).
            wanted = int(size / 1.25) - flows
            started = time.perf_counter()
            last = await log_stages.fill_stream(nc, stream, flow_messages(subjects, flows, wanted))
            flows += wanted
            _note(
                f"stream filled to {last} messages ({wanted / (time.perf_counter() - started) * 2.25:.0f}/s)"
            )
            if not results.projector[0]:
                seconds = await log_stages.projector_rate(nc, stream, last, workdir / "proj.db")
                results.projector = (last, seconds)
                # A create per flow and an update for every fourth (benchmarks/synthetic.py).
                results.projector_events = flows + (flows + 3) // 4
                _note(f"projector: {last} messages in {seconds:.1f}s ({last / seconds:.0f}/s)")
            seconds = await log_stages.rebuild_seconds(
                server.url, stream, workdir / f"rebuild-{size}"
            )
            events = flows + (flows + 3) // 4
            results.rebuilds.append((last, events, seconds))
            _note(f"rebuild: {events} events ({last} messages) in {seconds:.1f}s")
        await nc.close()
    finally:
        server.stop()


# -- printing --------------------------------------------------------------------------------
def _progress(label: str, m: Measured) -> None:
    _note(f"{label}: {m.rate:.0f}/s p50 {m.p50_ms:.2f} ms p99 {m.p99_ms:.2f} ms errors {m.errors}")


def _note(text: str) -> None:
    print(f"  .. {text}", flush=True)


def _ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.1f}x"


def _fig(m: Measured | None) -> str:
    if m is None:
        return "- | - | - | -"
    return f"{m.rate:.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} | {m.errors}"


def print_report(results: Results, elapsed: float) -> None:
    print()
    prefect = f"; {results.prefect_note}" if results.prefect_note else ""
    print(f"Machine: {platform.node()} {platform.machine()}, {_cores()} cores, "
          f"Python {platform.python_version()}{prefect}.")  # fmt: skip
    # Each table only when its stage ran (`--stages` picks them).
    if results.flows or results.echo:
        _print_request_reply(results)
    if results.flows or results.projector[0] or results.rebuilds:
        _print_figures(results)
    if results.scaling:
        print()
        print(
            "| flows in read model | filter p50 / p99 ms | count p50 / p99 ms | service peak RSS |"
        )
        print("| ---: | ---: | ---: | ---: |")
        for size, _rate, filtered, counted, rss in results.scaling:
            print(f"| {size:,} | {filtered.p50_ms:.2f} / {filtered.p99_ms:.2f} "
                  f"| {counted.p50_ms:.2f} / {counted.p99_ms:.2f} | {rss:.0f} MiB |")  # fmt: skip
    if results.cluster is not None:
        print_cluster(results.cluster)
    if results.mixed is not None:
        print_mixed(results.mixed)
    targets = _targets(results)
    if len(targets) > 1:
        print()
        for line in targets:
            print(line)
    print(f"\nwhole run: {elapsed:.0f}s")


def _print_request_reply(results: Results) -> None:
    print()
    print("| operation | in flight | flows req/s | p50 ms | p99 ms | errors "
          "| Prefect req/s | p50 ms | p99 ms | errors | flows/Prefect | flows/echo "
          "| --workers 2 req/s | errors |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: |")  # fmt: skip
    for flight in results.flights:
        echo = results.echo.get(flight)
        print(f"| echo (bare nats-py) | {flight} | {_fig(echo)} | | | | | | | | |")
    for operation in OPERATIONS:
        for flight in results.flights:
            ours = results.flows.get((operation, flight))
            theirs = results.prefect.get((operation, flight))
            echo = results.echo.get(flight)
            pair = results.workers2.get((operation, flight))
            reference = theirs.rate if theirs else math.nan
            print(f"| {operation} | {flight} | {_fig(ours)} | {_fig(theirs)} "
                  f"| {_ratio(ours.rate, reference) if ours else '-'} "
                  f"| {_ratio(ours.rate, echo.rate) if ours and echo else '-'} "
                  f"| {f'{pair.rate:.0f} | {pair.errors}' if pair else '- | -'} |")  # fmt: skip


def _print_figures(results: Results) -> None:
    print()
    print("| figure | value |")
    print("| --- | ---: |")
    lag50, lag99 = results.lag
    if not math.isnan(lag50):
        print(
            f"| read-model lag under 64 creates in flight, p50 / p99 "
            f"| {lag50:.1f} / {lag99:.1f} ms |"
        )
    messages, seconds = results.projector
    if messages:
        events = results.projector_events
        print(f"| projector catch-up ({messages:,} messages, {events:,} events) "
              f"| {messages / seconds:,.0f} messages/s, {events / seconds:,.0f} events/s |")  # fmt: skip
    for messages, events, seconds in results.rebuilds:
        print(
            f"| rebuild of {events:,} events ({messages:,} messages) | {seconds:.1f} s "
            f"({events / seconds:,.0f} events/s) |"
        )
    for what, rss in results.rss.items():
        print(f"| peak RSS, {what} | {rss:.0f} MiB |")


def _targets(results: Results) -> list[str]:
    """Issue 12's targets, each marked met or MISS from this run's figures (n/a: not measured)."""
    lines = ["Targets:"]

    def check(ok: bool | None, text: str) -> None:
        mark = "n/a " if ok is None else ("met " if ok else "MISS")
        lines.append(f"  {mark} {text}")

    for operation in OPERATIONS:
        for flight in (f for f in results.flights if f >= 32):
            theirs = results.prefect.get((operation, flight))
            base = theirs.rate if theirs else _PREFECT_REFERENCE[operation]
            source = "measured" if theirs else "reference"
            for label, table in (("", results.flows), (" --workers 2", results.workers2)):
                if ours := table.get((operation, flight)):
                    ok = ours.rate >= 20 * base and ours.errors == 0
                    check(ok, f"{operation}{label} x{flight}: {ours.rate:.0f}/s >= 20x Prefect "
                              f"({source} {base:.0f}/s), {ours.errors} errors")  # fmt: skip
    read1, echo1 = results.flows.get(("read", 1)), results.echo.get(1)
    if read1 and echo1:
        check(read1.p50_ms <= 2 * echo1.p50_ms,
              f"read p50 {read1.p50_ms:.2f} ms within 2x echo {echo1.p50_ms:.2f} ms")  # fmt: skip
    for flight in (f for f in results.flights if f >= 32):
        read, echo = results.flows.get(("read", flight)), results.echo.get(flight)
        if read and echo:
            check(read.rate >= echo.rate / 4,
                  f"read x{flight} {read.rate:.0f}/s >= 1/4 echo {echo.rate:.0f}/s")  # fmt: skip
        if read and read1:
            check(read.rate >= read1.rate,
                  f"read x{flight} {read.rate:.0f}/s >= read x1 {read1.rate:.0f}/s")  # fmt: skip
    messages, seconds = results.projector
    if messages:
        events = results.projector_events or messages
        check(events / seconds >= 20_000, f"projector {events / seconds:,.0f} events/s >= 20k/s")
    for _messages, events, seconds in results.rebuilds:
        if events >= 900_000:
            check(seconds < 60, f"rebuild of {events:,} events in {seconds:.1f}s < 60s")
    for size, _rate, filtered, counted, _rss in results.scaling:
        if size >= 1_000_000:
            check(filtered.p50_ms < 10, f"filter over {size:,} p50 {filtered.p50_ms:.1f} ms < 10")
            check(counted.p50_ms < 100, f"count over {size:,} p50 {counted.p50_ms:.1f} ms < 100")
    if (mixed := results.mixed) is not None:
        check(mixed.ratio >= MIXED_TARGET,
              f"mixed load with {mixed.as_of_share:.0%} as-of keeps {mixed.ratio:.2f} of its "
              f"throughput without (>= {MIXED_TARGET})")  # fmt: skip
    for what, rss in results.rss.items():
        check(None, f"peak RSS, {what}: {rss:.0f} MiB (reported, no target)")
    return lines


def _cores() -> int:
    return os.cpu_count() or 0


# -- main ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _workdir(keep: bool) -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="flows-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


async def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    results = Results(flights=tuple(args.flights))
    async with _workdir(args.keep) as workdir:
        if "rr" in args.stages:
            await request_reply(args, workdir, results)
        if "scale" in args.stages:
            await read_model_scaling(args, workdir, results)
        if "log" in args.stages:
            await log_rates(args, workdir, results)
        if "cluster" in args.stages:
            results.cluster = await cluster_stage(args, workdir)
        if "mixed" in args.stages:
            results.mixed = await mixed_stage(args, workdir)
    print_report(results, time.perf_counter() - started)


def _sizes(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (2)")
    parser.add_argument("--flights", type=_sizes, default=[1, 32, 64], help="1,32,64")
    parser.add_argument("--sizes", type=_sizes, default=[10_000, 100_000, 1_000_000],
                        help="read-model sizes for filter/count (10e3,100e3,1e6)")  # fmt: skip
    parser.add_argument("--rebuild-sizes", type=_sizes, default=[100_000, 1_000_000],
                        help="log sizes to rebuild, in events (100e3,1e6)")  # fmt: skip
    parser.add_argument("--stages", default="rr,scale,log,mixed", help="rr,scale,log,mixed,cluster")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("FLOWS_TEST_POSTGRES_URL"),
        help="a PostgreSQL server for the cluster stage's shared read model (a database is "
        "created and dropped); default $FLOWS_TEST_POSTGRES_URL",
    )
    parser.add_argument("--no-prefect", action="store_true", help="skip the Prefect column")
    parser.add_argument(
        "--no-workers2",
        dest="workers2",
        action="store_false",
        help="skip the `flows serve --workers 2` column",
    )
    parser.add_argument("--quick", action="store_true", help="1s runs, 10k/100k sizes")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.sizes, args.rebuild_sizes = 1.0, [10_000, 100_000], [100_000]
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
