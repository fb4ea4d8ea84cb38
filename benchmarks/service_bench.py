"""Request-reply figures for the flows service on this machine, and where its time goes.

Starts its own nats-server (loopback, free port) and one `flows serve` process, seeds flows,
then measures create, read, filter, count, paginate and update with 1 and with N requests in
flight, and a bare nats-py echo responder as the floor. Prints a table; every figure is measured
in this run, so ratios hold on a noisy machine. `cpu ms/req` is the service process's CPU time
(user + system, from /proc) per answered request: steadier than req/s when other work shares
the cores. `--py-spy DIR` records a py-spy profile of the service (raw, one file per operation,
at N in flight), as docs/profiles.md reads them.

    .venv/bin/python -m benchmarks.service_bench [--seconds 3] [--in-flight 32]
        [--ops read,filter,count] [--py-spy /tmp/profiles]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from events.contract.headers import STATUS
from services.embedded import EmbeddedNats

Request = Callable[[int], Awaitable[bytes]]


async def measure(
    request: Request, seconds: float, in_flight: int
) -> tuple[float, float, float, int]:
    """Requests/s, p50 ms, p99 ms and errors, `in_flight` workers for `seconds`."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal counter, errors
        while time.perf_counter() < deadline:
            counter += 1
            started = time.perf_counter()
            try:
                status = await request(counter)
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if not status.startswith(b"2"):
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
    return len(latencies) / elapsed, p50, p99, errors


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _py_spy(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    command = [str(py_spy), "record", "-f", "raw", "-d", str(max(1, round(seconds)))]
    command += ["-o", str(output), "-p", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run(
    seconds: float, in_flight: int, ops: list[str] | None = None, profiles: Path | None = None
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="flows-bench-"))
    server = EmbeddedNats(workdir / "nats")
    server.start()
    env = {**os.environ, "FLOWS_NATS_URL": server.url, "FLOWS_DATA_DIR": str(workdir / "data"),
           "FLOWS_LOG_LEVEL": "WARNING"}  # fmt: skip
    service = subprocess.Popen([sys.executable, "-m", "services", "serve"], env=env)
    nc = await nats.connect(server.url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await nc.request("flows.query.count", b"{}", timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

        async def echo(msg: Msg) -> None:
            await nc.publish(msg.reply, msg.data, headers={"Flows-Status": "200"})

        await nc.subscribe("bench.echo", cb=echo)
        echo_nc = await nats.connect(server.url)

        def status_of(reply: Msg) -> bytes:
            return str((reply.headers or {}).get(STATUS, "0")).encode()

        async def call(subject: str, body: dict[str, object], client: NatsClient = nc) -> bytes:
            reply = await client.request(subject, orjson.dumps(body), timeout=10)
            return status_of(reply)

        # Seed 1000 flows with tags, for reads and filters.
        ids: list[str] = []
        for start in range(0, 1000, 100):
            replies = await asyncio.gather(*(
                nc.request("flows.cmd.create", orjson.dumps(
                    {"name": f"seed-{i:05d}", "tags": ["db", "blue"] if i % 2 else ["db"]}), timeout=10)
                for i in range(start, start + 100)))  # fmt: skip
            ids.extend(orjson.loads(reply.data)["id"] for reply in replies)

        run_id = time.time_ns()
        cases: list[tuple[str, Request]] = [
            ("echo (bare nats-py)", lambda i: call("bench.echo", {"id": i}, echo_nc)),
            ("create", lambda i: call("flows.cmd.create", {"name": f"b-{run_id}-{i}"})),
            ("read", lambda i: call("flows.query.read", {"id": ids[i % len(ids)]})),
            ("update", lambda i: call("flows.cmd.update", {"id": ids[i % len(ids)], "tags": ["x"]})),
            ("filter (tag all_ + name like_, limit 200)", lambda i: call(
                "flows.query.filter",
                {"flows": {"tags": {"all_": ["blue"]}, "name": {"like_": "seed"}}, "limit": 200})),
            ("count", lambda i: call("flows.query.count", {"flows": {"tags": {"all_": ["db"]}}})),
            ("paginate (as filter, page 2)", lambda i: call(
                "flows.query.paginate",
                {"flows": {"tags": {"all_": ["blue"]}, "name": {"like_": "seed"}}, "limit": 200,
                 "page": 2})),
        ]  # fmt: skip
        if ops:
            cases = [case for case in cases if case[0].split()[0] in ops]
        print(
            f"{'operation':44} {'in flight':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>7} {'cpu ms/req':>10}"
        )
        for name, request in cases:
            for flight in (1, in_flight):
                spy = None
                if profiles is not None and flight == in_flight:
                    output = profiles / f"{name.split()[0]}-{flight}.txt"
                    spy = _py_spy(service.pid, seconds, output)
                cpu_before = _cpu_seconds(service.pid)
                rate, p50, p99, errors = await measure(request, seconds, flight)
                cpu = (_cpu_seconds(service.pid) - cpu_before) / max(1.0, rate * seconds)
                # The echo is answered in this process: the service's CPU says nothing of it.
                cpu_text = "-" if name.startswith("echo") else f"{cpu * 1000:.2f}"
                if spy is not None:
                    spy.wait(60)
                print(
                    f"{name:44} {flight:>9} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f} {errors:>7} "
                    f"{cpu_text:>10}"
                )
        await echo_nc.close()
    finally:
        await nc.close()
        service.send_signal(signal.SIGTERM)
        service.wait(30)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--ops", default="", help="only these, e.g. read,filter,count")
    parser.add_argument("--py-spy", type=Path, default=None, help="profiles to this directory")
    args = parser.parse_args()
    ops = [op for op in args.ops.split(",") if op] or None
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args.seconds, args.in_flight, ops, args.py_spy))


if __name__ == "__main__":
    main()
