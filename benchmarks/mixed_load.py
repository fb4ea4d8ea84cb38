"""A steady mixed load against one `flows serve`, without and then with `Flows-As-Of` counts at
random log positions: whether audit work starves the hot path (issue 12, item 8).

    .venv/bin/python -m benchmarks.mixed_load [--seconds 5] [--rounds 2] [--as-of-share 0.03]

Starts its own nats-server and service in a temp dir, seeds flows, then measures the two loads
in alternating rounds (so the machine's noise and the log's growth fall on both alike) and
prints both throughputs and their ratio; the target is a ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NatsClient

from benchmarks.loadgen import Measured, Request, measure, percentile
from benchmarks.processes import peak_rss_mb, start_service, wait_for_answer
from benchmarks.synthetic import tags_of
from benchmarks.targets import COUNT_BODY, FILTER_BODY, seed_flows
from services.embedded import EmbeddedNats

__all__ = ["MixedResults", "mixed_stage", "print_mixed"]

_SEED = 1000
_TIMEOUT = 60.0
# The ordinary mix: (operation, weight).
_MIX = (("create", 15), ("update", 15), ("delete", 5), ("read", 30), ("filter", 10),
        ("count", 15), ("history", 10))  # fmt: skip
TARGET = 0.8


@dataclass
class MixedResults:
    in_flight: int
    as_of_share: float
    without: list[Measured] = field(default_factory=list)
    with_as_of: list[Measured] = field(default_factory=list)
    as_of_latencies: list[float] = field(default_factory=list)  # seconds, answered ones
    failures: list[str] = field(default_factory=list)  # the first few, as answered
    # Per phase label, per round: (service, as-of worker) CPU, in cores.
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    log_end: int = 0
    service_rss_mb: float = float("nan")

    @property
    def ratio(self) -> float:
        if not self.without or not self.with_as_of:
            return float("nan")
        return _median(self.with_as_of) / _median(self.without)


def _median(figures: list[Measured]) -> float:
    return statistics.median(m.rate for m in figures)


class _Load:
    """The mixed requests; remembers the log's end (from command replies) and this run's
    flows (which deletes take)."""

    def __init__(self, nc: NatsClient, ids: list[str], as_of_share: float) -> None:
        self._nc, self._ids, self._share = nc, ids, as_of_share
        self._run = uuid.uuid4().hex[:8]
        self._mine: list[str] = []
        self.log_end = 0
        self.as_of_latencies: list[float] = []
        self.failures: list[str] = []
        names = [name for name, _ in _MIX]
        weights = [weight for _, weight in _MIX]
        chooser = random.Random(12)
        self._plan = chooser.choices(names, weights, k=10_007)
        self._random = random.Random(34)

    def request(self, share: float) -> Request:
        async def call(i: int) -> bool:
            if share and self._random.random() < share:
                return await self._as_of_count()
            return await self._operation(self._plan[i % len(self._plan)], i)

        return call

    async def _call(self, subject: str, body: dict[str, Any], **headers: str) -> bool:
        reply = await self._nc.request(
            f"flows.{subject}", orjson.dumps(body), timeout=_TIMEOUT, headers=headers or None
        )
        found = reply.headers or {}
        if subject.startswith("cmd."):
            self.log_end = max(self.log_end, int(found.get("Flows-Position", "0") or 0))
        ok = found.get("Flows-Status", "").startswith("2")
        if not ok and len(self.failures) < 5:  # what went wrong, for the report
            self.failures.append(f"{subject} {found.get('Flows-Status')} {reply.data[:300]!r}")
        return ok

    async def _as_of_count(self) -> bool:
        position = self._random.randint(1, max(1, self.log_end))
        started = time.perf_counter()
        ok = await self._call("query.count", COUNT_BODY, **{"Flows-As-Of": str(position)})
        if ok:
            self.as_of_latencies.append(time.perf_counter() - started)
        return ok

    async def _operation(self, name: str, i: int) -> bool:
        seeded = self._ids[i % len(self._ids)]
        if name == "create":
            reply = await self._nc.request(
                "flows.cmd.create",
                orjson.dumps({"name": f"mixed-{self._run}-{i}", "tags": ["db"]}),
                timeout=_TIMEOUT,
            )
            found = reply.headers or {}
            self.log_end = max(self.log_end, int(found.get("Flows-Position", "0") or 0))
            if found.get("Flows-Status", "").startswith("2"):
                self._mine.append(orjson.loads(reply.data)["id"])
                return True
            return False
        if name == "delete" and self._mine:
            return await self._call("cmd.delete", {"id": self._mine.pop()})
        if name == "update":
            return await self._call("cmd.update", {"id": seeded, "tags": tags_of(i)})
        if name == "filter":
            return await self._call("query.filter", FILTER_BODY)
        if name == "count":
            return await self._call("query.count", COUNT_BODY)
        if name == "history":
            return await self._call("audit.history", {"id": seeded})
        return await self._call("query.read", {"id": seeded})


async def mixed_stage(args: argparse.Namespace, workdir: Path) -> MixedResults:
    """The stage: `args.seconds` per measurement, `args.rounds` rounds (default 2),
    `args.in_flight` (32) and `args.as_of_share` (0.03) where given."""
    in_flight = getattr(args, "in_flight", 32)
    share = getattr(args, "as_of_share", 0.03)
    results = MixedResults(in_flight, share)
    server = EmbeddedNats(workdir / "nats-mixed")  # as `flows serve` ships it
    server.start()
    service = start_service(server.url, workdir / "service-mixed")
    _note(f"flows serve pid {service.pid}")
    try:
        nc = await nats.connect(server.url, max_reconnect_attempts=1)
        await wait_for_answer(nc, "flows.query.count", b"{}", service)
        load = _Load(nc, await seed_flows(nc, _SEED), share)
        await measure(load.request(0.0), 1.0, in_flight)  # learns the log's end
        # The first as-of starts the worker; let it answer once before measuring.
        await nc.request("flows.query.count", b"{}", timeout=_TIMEOUT, headers={"Flows-As-Of": "1"})
        worker = _worker_of(service.pid)
        for _ in range(getattr(args, "rounds", 2)):
            for label, figures, fraction in (
                ("without as-of", results.without, 0.0),
                (f"with {share:.0%} as-of", results.with_as_of, share),
            ):
                before = _cpu_seconds(service.pid), _cpu_seconds(worker)
                started = time.perf_counter()
                figures.append(await measure(load.request(fraction), args.seconds, in_flight))
                elapsed = time.perf_counter() - started
                used = [
                    (_cpu_seconds(p) - b) / elapsed
                    for p, b in zip((service.pid, worker), before, strict=True)
                ]
                results.cpu.setdefault(label, []).append((used[0], used[1]))
                _progress(f"mixed {label}", figures[-1])
                _note(f"CPU: service {used[0]:.0%} of a core, as-of worker {used[1]:.0%}")
        results.as_of_latencies, results.log_end = sorted(load.as_of_latencies), load.log_end
        results.failures = load.failures
        results.service_rss_mb = peak_rss_mb(service.pid)
        await nc.close()
    finally:
        service.stop()
        server.stop()
    return results


def _worker_of(service_pid: int) -> int | None:
    """The pid of the service's as-of worker process (its child), if it runs."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == service_pid and b"services.as_of_worker" in command:
                return int(stat.parent.name)
    return None


def _cpu_seconds(pid: int | None) -> float:
    """User and system CPU time of a process so far (0 when it does not run)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _note(text: str) -> None:
    print(f"  .. {text}", flush=True)


def _progress(label: str, m: Measured) -> None:
    _note(f"{label}: {m.rate:.0f}/s p50 {m.p50_ms:.2f} ms p99 {m.p99_ms:.2f} ms errors {m.errors}")


def print_mixed(results: MixedResults) -> None:
    print()
    print(f"| mixed load, {results.in_flight} in flight | ops/s (median) | rounds | errors "
          "| CPU cores: service / as-of worker |")  # fmt: skip
    print("| --- | ---: | --- | ---: | ---: |")
    for label, figures in (
        ("without as-of", results.without),
        (f"with {results.as_of_share:.0%} as-of counts", results.with_as_of),
    ):
        rounds = " / ".join(f"{m.rate:.0f}" for m in figures)
        errors = sum(m.errors for m in figures)
        cpu = results.cpu.get(label.split(" counts")[0], [])
        service = statistics.median(c[0] for c in cpu) if cpu else math.nan
        worker = statistics.median(c[1] for c in cpu) if cpu else math.nan
        print(f"| {label} | {_median(figures):.0f} | {rounds} | {errors} "
              f"| {service:.0%} / {worker:.0%} |")  # fmt: skip
    mark = "met " if results.ratio >= TARGET else "MISS"
    print(f"\n  {mark} with as-of / without: {results.ratio:.2f} (target >= {TARGET}); "
          f"{len(results.as_of_latencies)} as-of answers (p50 {_ms(results, 0.5)} ms, "
          f"p99 {_ms(results, 0.99)} ms), log at position {results.log_end}, "
          f"service peak RSS {results.service_rss_mb:.0f} MiB")  # fmt: skip
    for failure in results.failures:
        print(f"  failed: {failure}")


def _ms(results: MixedResults, fraction: float) -> str:
    return f"{percentile(results.as_of_latencies, fraction) * 1000:.0f}"


async def _main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="flows-mixed-"))
    try:
        print_mixed(await mixed_stage(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mixed_load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    parser.add_argument("--in-flight", type=int, default=32, help="requests in flight (32)")
    parser.add_argument("--as-of-share", type=float, default=0.03, help="as-of share (0.03)")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
