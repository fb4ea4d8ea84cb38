"""NATS service discovery: every instance answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`.

The NATS services protocol (ADR-32, what `nats micro ls/info/stats` sends) lets operators find
every instance of a service and see what each endpoint has done. The endpoints themselves are
FastStream subscribers here, so nats-py's `nats.micro.Service` (which owns its endpoints) does
not fit; its message types do, and are used for every answer. Each instance answers on the
subject for all services, for `flows`, and for its own id; a reply is counted as an error when
its `Flows-Status` is 500 or more, as `nats.micro` counts a handler's failure.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    ServiceInfo,
    ServicePing,
    ServiceStats,
)
from nats.nuid import NUID

from services.settings import Settings

__all__ = ["SERVICE_NAME", "Discovery", "Endpoint", "service_version"]

SERVICE_NAME = "flows"
_VERBS = ("PING", "INFO", "STATS")


@dataclass(slots=True)
class Endpoint:
    """One subject of the contract, with what it has done since the instance started."""

    name: str
    subject: str
    queue_group: str
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_ns: int = 0

    def stats(self) -> EndpointStats:
        return EndpointStats(
            name=self.name,
            subject=self.subject,
            queue_group=self.queue_group,
            num_requests=self.num_requests,
            num_errors=self.num_errors,
            last_error=self.last_error,
            processing_time=self.processing_ns,
            average_processing_time=self.processing_ns // max(self.num_requests, 1),
        )


class Discovery:
    def __init__(
        self, settings: Settings, projector_role: Callable[[], str] = lambda: "local"
    ) -> None:
        self.id = NUID().next().decode()
        self.started = datetime.now(UTC)
        self.version = service_version()
        backend = settings.resolved_database_url.partition(":")[0].partition("+")[0]
        self.metadata = {
            "stream": settings.stream,
            "subject_prefix": settings.subject_prefix,
            "read_model": backend,
            # Which process this instance is (several may run on one host: --workers).
            "pid": str(os.getpid()),
        }
        # Read at each answer: an instance's role changes when another takes over.
        self._projector_role = projector_role
        self._queue_group = settings.queue_group
        self._endpoints: dict[str, Endpoint] = {}

    def add_endpoint(self, name: str, subject: str) -> None:
        self._endpoints[subject] = Endpoint(name, subject, self._queue_group)

    def record(self, subject: str, status: int, error: str | None, started_ns: int) -> None:
        """A request on `subject` was answered with `status` (its one-line `error`), having
        arrived at `started_ns` (time.perf_counter_ns)."""
        endpoint = self._endpoints.get(subject)
        if endpoint is None:
            return
        endpoint.num_requests += 1
        endpoint.processing_ns += time.perf_counter_ns() - started_ns
        if status >= 500:
            endpoint.num_errors += 1
            endpoint.last_error = f"{status}:{error or ''}"

    # -- the control subjects ----------------------------------------------------------------
    def control_subjects(self) -> list[str]:
        return [
            subject
            for verb in _VERBS
            for subject in (
                f"$SRV.{verb}",
                f"$SRV.{verb}.{SERVICE_NAME}",
                f"$SRV.{verb}.{SERVICE_NAME}.{self.id}",
            )
        ]

    def answer(self, subject: str) -> bytes:
        """The JSON answer to a request on one of `control_subjects()`."""
        verb = subject.split(".")[1]
        if verb == "PING":
            body = ServicePing(self.id, SERVICE_NAME, self.version, self._metadata()).to_dict()
        elif verb == "INFO":
            body = self._info()
        else:
            body = self._stats()
        return orjson.dumps(body)

    def _info(self) -> dict[str, Any]:
        endpoints = [
            EndpointInfo(e.name, e.subject, e.queue_group, {}) for e in self._endpoints.values()
        ]
        return ServiceInfo(
            name=SERVICE_NAME,
            id=self.id,
            version=self.version,
            description="Prefect's flows API, event-sourced on NATS JetStream",
            endpoints=endpoints,
            metadata=self._metadata(),
        ).to_dict()

    def _stats(self) -> dict[str, Any]:
        return ServiceStats(
            id=self.id,
            name=SERVICE_NAME,
            version=self.version,
            started=self.started,
            endpoints=[endpoint.stats() for endpoint in self._endpoints.values()],
            metadata=self._metadata(),
        ).to_dict()

    def _metadata(self) -> dict[str, str]:
        # "leader" / "follower" on a shared PostgreSQL model, "local" on SQLite.
        return {**self.metadata, "projector": self._projector_role()}

    def handler(self, allowed: Callable[[Msg], bool]) -> Callable[[Msg], Awaitable[None]]:
        """The nats-py callback of the control subjects; `allowed` vets the reply subject."""

        async def handle(msg: Msg) -> None:
            if msg.reply and allowed(msg):
                await msg.respond(self.answer(msg.subject))

        return handle


def service_version() -> str:
    try:
        return importlib.metadata.version("flows-service")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0.0.0"
