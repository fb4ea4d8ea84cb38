"""What a create and an update cost nats-server: fsyncs and file operations per command.

Starts its own nats-server (embedded settings: `sync_interval: always`, R1 file stream) and one
`flows serve`, then runs commands one at a time and 32 at a time while `strace -f -c` counts
nats-server's system calls, and prints them per command. Needs strace (Linux).

    .venv/bin/python -m benchmarks.write_cost [--commands 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import orjson

from benchmarks.sync_interval import wait_until_answering
from services.embedded import EmbeddedNats

_CALLS = ("fsync", "fdatasync", "write", "pwrite64", "openat", "mkdirat", "unlinkat")


def _counts(report: Path) -> dict[str, int]:
    """The call counts of an `strace -c` report."""
    counts: dict[str, int] = {}
    for line in report.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in _CALLS and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    return counts


async def _traced(
    pid: int, report: Path, n: int, in_flight: int, command: Callable[[int], Awaitable[None]]
) -> dict[str, int]:
    trace = ",".join(_CALLS)
    strace = subprocess.Popen(
        ["strace", "-f", "-c", "-o", str(report), "-e", f"trace={trace}", "-p", str(pid)],
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # strace attaches to every thread first
    slots = asyncio.Semaphore(in_flight)

    async def limited(i: int) -> None:
        async with slots:
            await command(i)

    await asyncio.gather(*(limited(i) for i in range(n)))
    strace.send_signal(signal.SIGINT)
    strace.wait(30)
    return _counts(report)


async def run(n: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="flows-write-cost-"))
    server = EmbeddedNats(workdir / "nats")
    server.start()
    assert server.pid is not None
    env = {**os.environ, "FLOWS_NATS_URL": server.url, "FLOWS_DATA_DIR": str(workdir / "data"),
           "FLOWS_LOG_LEVEL": "WARNING"}  # fmt: skip
    service = subprocess.Popen([sys.executable, "-m", "services", "serve"], env=env)
    nc = await nats.connect(server.url)
    try:
        await wait_until_answering(nc)
        run_id = time.time_ns()
        ids: list[str] = []

        async def call(subject: str, body: dict[str, object], msg_id: str | None) -> bytes:
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            reply = await nc.request(subject, orjson.dumps(body), timeout=30, headers=headers)
            status = (reply.headers or {}).get("Flows-Status", "")
            if not status.startswith("2"):
                raise RuntimeError(f"{subject} answered {status}: {reply.data[:200]!r}")
            return reply.data

        for i in range(n):
            ids.append(orjson.loads(await call("flows.cmd.create", {"name": f"s-{i}"}, None))["id"])

        def create(with_id: bool, tag: str) -> Callable[[int], Awaitable[None]]:
            async def command(i: int) -> None:
                msg_id = f"{run_id}-{tag}-{i}" if with_id else None
                await call("flows.cmd.create", {"name": f"{tag}-{run_id}-{i}"}, msg_id)

            return command

        def update(with_id: bool, tag: str) -> Callable[[int], Awaitable[None]]:
            async def command(i: int) -> None:
                msg_id = f"{run_id}-{tag}-{i}" if with_id else None
                await call("flows.cmd.update", {"id": ids[i % n], "tags": [tag]}, msg_id)

            return command

        cases = [
            ("create", 1, create(False, "c1")),
            ("create, Nats-Msg-Id", 1, create(True, "c1i")),
            ("update", 1, update(False, "u1")),
            ("update, Nats-Msg-Id", 1, update(True, "u1i")),
            ("create", 32, create(False, "c32")),
            ("create, Nats-Msg-Id", 32, create(True, "c32i")),
            ("update, Nats-Msg-Id", 32, update(True, "u32i")),
        ]
        print(f"{'command':22} {'in flight':>9} " + " ".join(f"{c:>9}" for c in _CALLS))
        for number, (label, in_flight, command) in enumerate(cases):
            count = n if in_flight == 1 else n * 4
            report = workdir / f"strace-{number}.txt"
            counts = await _traced(server.pid, report, count, in_flight, command)
            per = " ".join(f"{counts.get(c, 0) / count:>9.2f}" for c in _CALLS)
            print(f"{label:22} {in_flight:>9} {per}", flush=True)
    finally:
        await nc.close()
        service.send_signal(signal.SIGTERM)
        service.wait(30)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200, help="commands per case")
    args = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("strace is not installed: this measurement counts nats-server's system calls")
    asyncio.run(run(args.commands))


if __name__ == "__main__":
    main()
