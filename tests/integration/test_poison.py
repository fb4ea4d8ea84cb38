"""Poison messages in the log: parked with their reason and reported, never silently skipped,
and the projector goes on with the events after them, in order.

A foreign writer (here the test, with plain JetStream publishes) puts garbage, an unknown event
type and a well-formed JSON event of the wrong shape on `P.events.<uuid>` between real commands.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NatsClient

from services.client import FlowsClient
from services.embedded import EmbeddedNats
from services.settings import Settings
from tests.integration.conftest import catch_up
from tests.processes import ServiceProcess, new_target, run_flows, wait_for_checkpoint


def event_json(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "flow_id": str(uuid.uuid4()),
        "occurred": "2026-01-01T00:00:00Z",
        "data": data,
        "metadata": {},
    }


POISON: list[tuple[bytes, str]] = [
    (b"\x00\xffnot json at all{", "not JSON"),
    (b'{"type": "FlowRenamed", "flow_id": "x"}', "unknown event type 'FlowRenamed'"),
    (b"[1, 2, 3]", "not a JSON object"),
    (
        orjson.dumps(event_json("FlowCreated", {"name": "x", "tags": 7})),
        "FlowCreated tags not a string list",
    ),
]


async def stats(client: FlowsClient) -> dict[str, Any]:
    reply = await client.request("audit.stats")
    assert reply.status == 200, reply
    body: dict[str, Any] = reply.body
    return body


async def test_poison_events_are_parked_reported_and_the_rest_applied_in_order(
    service: Settings, nc: NatsClient, client: FlowsClient
) -> None:
    before = (await client.create("before-poison", tags=["a"])).raise_for_status()
    await catch_up(nc, service)
    healthy = await stats(client)
    assert healthy["status"] == "ok" and healthy["parked"] == [], healthy
    assert healthy["lag"] == 0 and healthy["position"] == healthy["log_end"] > 0, healthy

    js = nc.jetstream()
    parked_at: list[tuple[int, str, str]] = []
    for payload, reason in POISON:
        subject = f"{service.subject_prefix}.events.{uuid.uuid4()}"
        ack = await js.publish(subject, payload, stream=service.stream)
        parked_at.append((ack.seq, subject, reason))
        # A real command between poison messages: the projector must keep going, in order.
        updated = await client.update(before.body["id"], tags=[f"after-{ack.seq}"])
        assert updated.status == 204, updated
    after = (await client.create("after-poison", tags=["b"])).raise_for_status()
    await catch_up(nc, service)

    report = await stats(client)
    assert report["status"] == "degraded", report
    assert report["lag"] == 0 and report["position"] == report["log_end"], report
    assert report["parked_count"] == len(POISON), report
    assert [(p["position"], p["subject"]) for p in report["parked"]] == [
        (position, subject) for position, subject, _ in parked_at
    ], report
    for parked, (_, _, reason) in zip(report["parked"], parked_at, strict=True):
        assert reason in parked["reason"], (reason, parked)
    assert any("parked" in problem for problem in report["problems"]), report

    # Everything around the poison was applied: the last update wins, the later create exists.
    read = (await client.read(before.body["id"])).raise_for_status()
    assert read.body["tags"] == [f"after-{parked_at[-1][0]}"], read.body
    assert (await client.read(after.body["id"])).status == 200
    assert (await client.count()).body == 2

    limited = await client.request("audit.stats", {"parked_limit": 1})
    assert limited.status == 200 and len(limited.body["parked"]) == 1, limited
    assert limited.body["parked_count"] == len(POISON), limited


async def test_stats_rejects_a_malformed_request_with_422(
    service: Settings, client: FlowsClient
) -> None:
    for body in ({"parked_limit": -1}, {"unknown": 1}, [1]):
        reply = await client.request("audit.stats", body)
        assert reply.status == 422, (body, reply)


async def test_flows_stats_reports_a_parked_message_of_a_running_service(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    target = new_target(nats_server.url, tmp_path)
    async with ServiceProcess(target) as service:
        await service.start()
        ok = await run_flows(target, "stats")
        assert ok.returncode == 0 and "status: ok" in ok.stdout, str(ok)
        nc = await nats.connect(target.nats_url)
        try:
            subject = f"{target.prefix}.events.{uuid.uuid4()}"
            ack = await nc.jetstream().publish(subject, b"garbage", stream=target.stream)
            await wait_for_checkpoint(target.database, ack.seq)
        finally:
            await nc.close()
        text = await run_flows(target, "stats")
        as_json = await run_flows(target, "stats", "--json")
        await service.stop()
    # Degraded exits 1 (scripts and health checks see it), the report printed all the same.
    assert text.returncode == 1 and "status: degraded" in text.stdout, str(text)
    assert "the service is degraded" in text.stderr, str(text)
    assert f"position {ack.seq} on {subject}: not JSON" in text.stdout, str(text)
    assert as_json.returncode == 1, str(as_json)
    body = as_json.json()
    assert body["parked"][0]["position"] == ack.seq and body["lag"] == 0, body
