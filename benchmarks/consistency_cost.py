"""What linearizable reads cost: the same reads against one `flows serve`, with no header (the
default: each query waits for the log end JetStream reports at its arrival, one look-up shared
by the queries arriving meanwhile) and with `Flows-Consistency: eventual` (no look-up),
alternating rounds so that machine noise falls on both.

    .venv/bin/python -m benchmarks.consistency_cost [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import nats
import orjson

from benchmarks.loadgen import Request, compare, print_comparison
from benchmarks.processes import start_service, wait_for_answer
from services.embedded import EmbeddedNats

LEVELS = {"linearizable": None, "eventual": {"Flows-Consistency": "eventual"}}


async def run(seconds: float, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="flows-consistency-bench-"))
    server = EmbeddedNats(workdir / "nats")
    server.start()
    service = start_service(server.url, workdir / "data")
    nc = await nats.connect(server.url)
    try:
        await wait_for_answer(nc, "flows.query.count", b"{}", service)
        reply = await nc.request("flows.cmd.create", b'{"name": "bench"}', timeout=10)
        body = orjson.dumps({"id": orjson.loads(reply.data)["id"]})

        def reader(headers: dict[str, str] | None) -> Request:
            async def read(_: int) -> bool:
                answer = await nc.request("flows.query.read", body, timeout=10, headers=headers)
                return (answer.headers or {}).get("Flows-Status") == "200"

            return read

        cases = {level: reader(headers) for level, headers in LEVELS.items()}
        figures = await compare(cases, seconds, rounds)
        print_comparison("reads", figures, ("eventual", "linearizable"))
    finally:
        await nc.close()
        service.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.seconds, args.rounds))


if __name__ == "__main__":
    main()
