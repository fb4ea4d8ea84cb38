"""A closed-loop load generator: N workers, each sending its next request when the last returns."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "Measured",
    "Request",
    "compare",
    "measure",
    "measure_rounds",
    "percentile",
    "print_comparison",
]

# One request; returns whether it succeeded (a 2xx answer).
Request = Callable[[int], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Measured:
    rate: float  # successful requests per second
    p50_ms: float
    p99_ms: float
    errors: int

    @classmethod
    def none(cls) -> Measured:
        return cls(float("nan"), float("nan"), float("nan"), 0)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list; NaN when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def measure(request: Request, seconds: float, in_flight: int) -> Measured:
    """Requests/s, p50 and p99 latency and errors of `in_flight` workers for `seconds`.

    A short warm-up (a tenth of the time, not counted) lets connections and caches settle.
    Request numbers run on from the warm-up, so requests that name something new by their
    number (creates) never repeat one of the warm-up's.
    """
    numbers = itertools.count(1)
    await _loop(request, min(0.5, seconds / 10), in_flight, [], [0], numbers)
    latencies: list[float] = []
    errors = [0]
    started = time.perf_counter()
    await _loop(request, seconds, in_flight, latencies, errors, numbers)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Measured(
        len(latencies) / elapsed,
        percentile(latencies, 0.50) * 1000,
        percentile(latencies, 0.99) * 1000,
        errors[0],
    )


async def _loop(
    request: Request,
    seconds: float,
    in_flight: int,
    latencies: list[float],
    errors: list[int],
    numbers: Iterator[int],
) -> None:
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            number = next(numbers)
            started = time.perf_counter()
            try:
                ok = await request(number)
            except Exception:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors[0] += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))


async def measure_rounds(
    cases: dict[str, Request],
    seconds: float,
    rounds: int,
    in_flight: tuple[int, ...] = (1, 32),
    progress: Callable[[str, int, Measured], None] | None = None,
) -> dict[tuple[str, int], Measured]:
    """Each case at each in-flight count, the cases measured in alternating rounds so that
    machine noise falls on all of them alike: per case the median rate, p50 and p99 of the
    rounds, and their errors summed. `progress` hears of every measurement."""
    found: dict[tuple[str, int], list[Measured]] = {}
    for _ in range(rounds):
        for flight in in_flight:
            for name, request in cases.items():
                measured = await measure(request, seconds, flight)
                found.setdefault((name, flight), []).append(measured)
                if progress is not None:
                    progress(name, flight, measured)
    return {
        key: Measured(
            statistics.median(m.rate for m in figures),
            statistics.median(m.p50_ms for m in figures),
            statistics.median(m.p99_ms for m in figures),
            sum(m.errors for m in figures),
        )
        for key, figures in found.items()
    }


async def compare(
    cases: dict[str, Request], seconds: float, rounds: int, in_flight: tuple[int, ...] = (1, 32)
) -> dict[tuple[str, int], tuple[float, float]]:
    """The median rate and p50 of each case at each in-flight count (`measure_rounds`)."""
    figures = await measure_rounds(cases, seconds, rounds, in_flight)
    return {key: (m.rate, m.p50_ms) for key, m in figures.items()}


def print_comparison(
    label: str, figures: dict[tuple[str, int], tuple[float, float]], ratio: tuple[str, str]
) -> None:
    """A table of `compare`'s figures, and the throughput ratio of `ratio[0]` to `ratio[1]`."""
    print(f"{label:14} {'in flight':>9} {'req/s':>9} {'p50 ms':>8}")
    for (name, flight), (rate, p50) in sorted(figures.items()):
        print(f"{name:14} {flight:>9} {rate:>9.0f} {p50:>8.2f}")
    for flight in sorted({flight for _, flight in figures}):
        over = figures[(ratio[0], flight)][0] / figures[(ratio[1], flight)][0]
        print(f"{ratio[0]}/{ratio[1]} throughput at {flight} in flight: {over:.3f}")
