"""Prometheus metrics of one service instance, and what `/healthz` answers.

Request counts and durations are recorded as requests are answered; the log, projection and
parked figures are read when Prometheus scrapes (one stream-info look-up and one small query
per scrape, never per request). Each app has a registry of its own (no module-level state), with
the process, platform and garbage-collector collectors Prometheus clients expect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from services.bootstrap import Service
from services.stats import HealthReporter

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Request durations from a fraction of a millisecond (a read) to the longest wait (60 s).
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


class Metrics:
    def __init__(self, runtime: Service, health: HealthReporter) -> None:
        self._runtime = runtime
        self._health = health
        registry = self.registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._requests = Counter(
            "flows_requests",
            "Requests answered, by operation and Flows-Status",
            ["operation", "status"],
            registry=registry,
        )
        self._duration = Histogram(
            "flows_request_duration_seconds",
            "Time from a request's arrival to its reply, by operation",
            ["operation"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self._log_position = _gauge(registry, "flows_log_position", "The event log's last position")
        self._projection_position = _gauge(
            registry, "flows_projection_position", "The last log position the read model applied"
        )
        self._lag_events = _gauge(
            registry, "flows_projection_lag_events", "Log messages not yet in the read model"
        )
        self._lag_seconds = _gauge(
            registry,
            "flows_projection_lag_seconds",
            "Age of the oldest log message not yet in the read model (0 when caught up)",
        )
        self._parked = _gauge(
            registry, "flows_parked_messages", "Log messages the projector parked as not events"
        )
        self._leader = _gauge(
            registry,
            "flows_projector_leader",
            "1 when this instance's projector writes its read model (the leader of a shared "
            "PostgreSQL model, or its own SQLite model), 0 when it follows another's",
        )
        registry.register(_Conflicts(lambda: runtime.writer.conflicts if runtime.writer else 0))

    def observe(self, operation: str, status: int, started_ns: int) -> None:
        """A request of `operation` answered with `status`, having arrived at `started_ns`."""
        self._requests.labels(operation, str(status)).inc()
        self._duration.labels(operation).observe((time.perf_counter_ns() - started_ns) / 1e9)

    async def scrape(self) -> bytes:
        """The Prometheus text of every metric, the log's figures read now."""
        report = await self._health.report(parked_limit=0)
        if report["log_end"] is not None:
            self._log_position.set(report["log_end"])
        self._projection_position.set(report["position"])
        self._lag_events.set(report["lag"] or 0)
        self._parked.set(report["parked_count"])
        self._leader.set(0 if report["projector"] == "follower" else 1)
        self._lag_seconds.set(await self._lag_age(report))
        return generate_latest(self.registry)

    async def _lag_age(self, report: dict[str, Any]) -> float:
        event_log = self._runtime.event_log
        if not report["lag"] or event_log is None:
            return 0.0
        oldest = await event_log.read(report["position"], 1)
        if not oldest or oldest[0].time is None:
            return 0.0
        return max(0.0, (datetime.now(UTC) - oldest[0].time).total_seconds())

    async def healthy(self) -> tuple[bool, dict[str, Any]]:
        """For container health checks: ready, and the read model not degraded."""
        if not self._runtime.is_started:
            return False, {"status": "starting"}
        report = await self._health.report(parked_limit=0)
        return report["status"] == "ok", report


def _gauge(registry: CollectorRegistry, name: str, documentation: str) -> Gauge:
    return Gauge(name, documentation, registry=registry)


class _Conflicts(Collector):
    """Appends that lost an optimistic-concurrency race, read off the writer at scrape time."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "flows_command_conflicts",
            "Appends that lost an optimistic-concurrency race and were planned again",
        )
        family.add_metric([], self._read())
        yield family
