"""What JetStream's `sync_interval: always` costs the flows service on this machine.

nats-server acknowledges a write once it is in the OS page cache and fsyncs the store every
2 minutes by default: a power loss (not a process crash) on a single node can lose up to 2 minutes
of acknowledged commands. `sync_interval: always` fsyncs before every acknowledgement. This script
starts, for each setting, a fresh nats-server (loopback, free port) and one `flows serve`, and
prints creates/s and updates/s (plus raw JetStream publishes/s) with 1 and N requests in flight.

    .venv/bin/python -m benchmarks.sync_interval [--seconds 3] [--in-flight 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import orjson
from nats.aio.client import Client as NatsClient

from benchmarks.service_bench import Request, measure
from services.embedded import EmbeddedNats

SETTINGS: list[tuple[str, str | None]] = [
    ("default (2m)", None),
    ("always", "always"),
]


async def wait_until_answering(nc: NatsClient) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await nc.request("flows.query.count", b"{}", timeout=1)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def one_setting(
    label: str, sync_interval: str | None, seconds: float, in_flight: int
) -> list[tuple[str, int, float]]:
    workdir = Path(tempfile.mkdtemp(prefix="flows-sync-"))
    server = EmbeddedNats(workdir / "nats", sync_interval=sync_interval)
    server.start()
    env = {**os.environ, "FLOWS_NATS_URL": server.url, "FLOWS_DATA_DIR": str(workdir / "data"),
           "FLOWS_LOG_LEVEL": "WARNING"}  # fmt: skip
    service = subprocess.Popen([sys.executable, "-m", "services", "serve"], env=env)
    nc = await nats.connect(server.url)
    rows: list[tuple[str, int, float]] = []
    try:
        await wait_until_answering(nc)
        js = nc.jetstream()
        await js.add_stream(name="RAW", subjects=["raw.>"])

        async def status(subject: str, body: dict[str, object]) -> bytes:
            reply = await nc.request(subject, orjson.dumps(body), timeout=10)
            return (reply.headers or {}).get("Flows-Status", "0").encode()

        seeded = await asyncio.gather(
            *(nc.request("flows.cmd.create", orjson.dumps({"name": f"seed-{i}"}), timeout=10)
              for i in range(200))
        )  # fmt: skip
        ids = [orjson.loads(reply.data)["id"] for reply in seeded]
        run_id = time.time_ns()

        async def raw_publish(i: int) -> bytes:
            await js.publish(f"raw.{i % 100}", b"x" * 200)
            return b"200"

        cases: list[tuple[str, Request]] = [
            ("create", lambda i: status("flows.cmd.create", {"name": f"b-{run_id}-{i}"})),
            ("update", lambda i: status("flows.cmd.update", {"id": ids[i % len(ids)]})),
            ("raw JetStream publish", raw_publish),
        ]
        for name, request in cases:
            for flight in (1, in_flight):
                rate, _, _, errors = await measure(request, seconds, flight)
                if errors:
                    print(f"  ({label}: {errors} errors during {name} x{flight})", file=sys.stderr)
                rows.append((name, flight, rate))
    finally:
        await nc.close()
        service.send_signal(signal.SIGTERM)
        service.wait(30)
        server.stop()
    return rows


async def run(seconds: float, in_flight: int) -> None:
    results = {
        label: await one_setting(label, value, seconds, in_flight) for label, value in SETTINGS
    }
    labels = [label for label, _ in SETTINGS]
    header = f"{'operation':24} {'in flight':>9} " + " ".join(f"{label:>14}" for label in labels)
    print(header + f" {'always/default':>15}")
    baseline, safe = results[labels[0]], results[labels[-1]]
    for (name, flight, default_rate), (_, _, always_rate) in zip(baseline, safe, strict=True):
        rates = " ".join(f"{rate:>14.0f}" for rate in (default_rate, always_rate))
        ratio = always_rate / default_rate if default_rate else float("nan")
        print(f"{name:24} {flight:>9} {rates} {ratio:>15.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.in_flight))


if __name__ == "__main__":
    main()
