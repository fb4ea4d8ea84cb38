"""What Prometheus metrics cost on the read path: one `flows serve` with metrics off and one with
metrics on (FLOWS_METRICS_ADDR, scraped every second meanwhile, as Prometheus would), the same
reads against each, alternating rounds so that machine noise falls on both.

    .venv/bin/python -m benchmarks.metrics_overhead [--seconds 3] [--rounds 3]

Prints reads/s and p50 per setting and in-flight count, and on/off ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

import nats
import orjson

from benchmarks.loadgen import Request, compare, print_comparison
from benchmarks.processes import start_service, wait_for_answer
from services.embedded import EmbeddedNats, free_port


async def _scrape_every_second(port: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def run(seconds: float, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="flows-metrics-bench-"))
    server = EmbeddedNats(workdir / "nats")
    server.start()
    port = free_port()
    off = start_service(server.url, workdir / "off", FLOWS_SUBJECT_PREFIX="off", FLOWS_STREAM="OFF")
    on = start_service(
        server.url,
        workdir / "on",
        FLOWS_SUBJECT_PREFIX="on",
        FLOWS_STREAM="ON",
        FLOWS_METRICS_ADDR=f"127.0.0.1:{port}",
    )
    nc = await nats.connect(server.url)
    stop = asyncio.Event()
    scraper: asyncio.Task[None] | None = None
    try:
        ids: dict[str, str] = {}
        for prefix, child in (("off", off), ("on", on)):
            await wait_for_answer(nc, f"{prefix}.query.count", b"{}", child)
            reply = await nc.request(f"{prefix}.cmd.create", b'{"name": "bench"}', timeout=10)
            ids[prefix] = orjson.loads(reply.data)["id"]
        scraper = asyncio.create_task(_scrape_every_second(port, stop))

        def reader(prefix: str) -> Request:
            body = orjson.dumps({"id": ids[prefix]})

            async def read(_: int) -> bool:
                reply = await nc.request(f"{prefix}.query.read", body, timeout=10)
                return (reply.headers or {}).get("Flows-Status") == "200"

            return read

        figures = await compare({"off": reader("off"), "on": reader("on")}, seconds, rounds)
        print_comparison("metrics", figures, ("on", "off"))
    finally:
        stop.set()
        if scraper is not None:
            await scraper
        await nc.close()
        off.stop()
        on.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.rounds))


if __name__ == "__main__":
    main()
