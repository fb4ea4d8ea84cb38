"""Prometheus metrics and /healthz over real HTTP, from a service on a real nats-server."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from nats.aio.client import Client as NatsClient

from services.app import create_app
from services.embedded import free_port
from services.settings import Settings
from tests.integration.conftest import catch_up, projector_held, running
from tests.integration.wire import assert_error, assert_success, call


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of the exposition text (`name{labels} value`)."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no {name}{{{labels}}} in the metrics"
    return float(found.group(1))


@pytest.fixture
async def measured(settings: Settings, nc: NatsClient) -> AsyncIterator[tuple[Settings, int]]:
    port = free_port()
    chosen = dataclasses.replace(settings, metrics_addr=f"127.0.0.1:{port}")
    async with running(chosen, nc):
        yield chosen, port


async def test_metrics_count_requests_and_read_the_log(
    measured: tuple[Settings, int], nc: NatsClient
) -> None:
    settings, port = measured
    prefix = settings.subject_prefix
    created = await call(nc, prefix, "cmd.create", {"name": "measured"})
    assert_success(created, 201)
    for _ in range(5):
        assert_success(await call(nc, prefix, "query.read", {"id": created.json["id"]}), 200)
    assert_error(await call(nc, prefix, "query.read", {"id": "nope"}), 422)
    await catch_up(nc, settings)

    status, text = await http_get(port, "/metrics")
    assert status == 200
    assert sample(text, "flows_requests_total", 'operation="read",status="200"') == 5
    assert sample(text, "flows_requests_total", 'operation="read",status="422"') == 1
    assert sample(text, "flows_requests_total", 'operation="create",status="201"') == 1
    assert sample(text, "flows_request_duration_seconds_count", 'operation="read"') == 6
    assert sample(text, "flows_request_duration_seconds_sum", 'operation="read"') > 0
    end = await log_end(nc, settings)
    assert sample(text, "flows_log_position") == end
    assert sample(text, "flows_projection_position") == end
    assert sample(text, "flows_projection_lag_events") == 0
    assert sample(text, "flows_projection_lag_seconds") == 0
    assert sample(text, "flows_parked_messages") == 0
    assert sample(text, "flows_projector_leader") == 1  # its own SQLite model: it projects
    assert sample(text, "flows_command_conflicts_total") == 0
    assert sample(text, "process_resident_memory_bytes") > 0
    assert "python_gc_objects_collected_total" in text

    status, body = await http_get(port, "/healthz")
    assert (status, orjson.loads(body)["status"]) == (200, "ok")
    assert (await http_get(port, "/nope"))[0] == 404


async def test_lag_and_health_follow_the_projector_and_parked_messages(
    measured: tuple[Settings, int], nc: NatsClient
) -> None:
    settings, port = measured
    prefix = settings.subject_prefix
    async with projector_held(settings):
        assert_success(await call(nc, prefix, "cmd.create", {"name": "behind"}), 201)
        status, text = await http_get(port, "/metrics")
        assert status == 200
        assert sample(text, "flows_projection_lag_events") >= 1
        assert sample(text, "flows_projection_lag_seconds") >= 0
    await catch_up(nc, settings)
    await nc.jetstream().publish(f"{prefix}.events.{uuid.uuid4()}", b"garbage")
    await catch_up(nc, settings)
    status, body = await http_get(port, "/healthz")
    assert status == 503
    assert orjson.loads(body)["status"] == "degraded"
    _, text = await http_get(port, "/metrics")
    assert sample(text, "flows_parked_messages") == 1


async def log_end(nc: NatsClient, settings: Settings) -> int:
    info = await nc.jetstream().stream_info(settings.stream)
    return int(info.state.last_seq)


def test_an_unusable_address_is_refused_with_what_to_write(settings: Settings) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        create_app(dataclasses.replace(settings, metrics_addr="localhost"))
