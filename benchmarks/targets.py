"""The same five operations against each system: the flows service over NATS, Prefect over HTTP,
and the echo responder (one request shape for every operation: the floor of a round trip)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from benchmarks.loadgen import Request
from benchmarks.synthetic import tags_of

__all__ = [
    "COUNT_BODY",
    "FILTER_BODY",
    "OPERATIONS",
    "echo_request",
    "flows_requests",
    "prefect_requests",
    "seed_flows",
    "seed_prefect",
]  # fmt: skip

OPERATIONS = ("create", "read", "update", "filter", "count")
FILTER_BODY: dict[str, Any] = {
    "flows": {"tags": {"all_": ["blue"]}, "name": {"like_": "seed"}},
    "limit": 200,
}
COUNT_BODY: dict[str, Any] = {"flows": {"tags": {"all_": ["db"]}}}
_TIMEOUT = 30.0


def _ok(reply: Msg) -> bool:
    return bool((reply.headers or {}).get("Flows-Status", "").startswith("2"))


async def _nats_call(nc: NatsClient, subject: str, body: dict[str, Any]) -> bool:
    return _ok(await nc.request(subject, orjson.dumps(body), timeout=_TIMEOUT))


async def seed_flows(nc: NatsClient, count: int, prefix: str = "flows") -> list[str]:
    """`count` flows named seed-<i> through the service on `prefix`; their ids."""
    ids: list[str] = []
    for start in range(0, count, 50):
        replies = await asyncio.gather(*(
            nc.request(f"{prefix}.cmd.create", orjson.dumps(
                {"name": f"seed-{i:07d}", "tags": tags_of(i)}), timeout=_TIMEOUT)
            for i in range(start, min(count, start + 50))))  # fmt: skip
        ids.extend(orjson.loads(reply.data)["id"] for reply in replies)
    return ids


def flows_requests(
    nc: NatsClient, ids: Sequence[str], run_id: str, prefix: str = "flows"
) -> dict[str, Request]:
    """The operations against the service on subject prefix `prefix`."""

    def pick(i: int) -> str:
        return ids[i % len(ids)]

    return {
        "create": lambda i: _nats_call(
            nc, f"{prefix}.cmd.create", {"name": f"bench-{run_id}-{i}", "tags": ["db"]}
        ),
        "read": lambda i: _nats_call(nc, f"{prefix}.query.read", {"id": pick(i)}),
        # The seeded tags again: filters and counts keep matching what they matched.
        "update": lambda i: _nats_call(
            nc, f"{prefix}.cmd.update", {"id": pick(i), "tags": tags_of(i % len(ids))}
        ),
        "filter": lambda i: _nats_call(nc, f"{prefix}.query.filter", FILTER_BODY),
        "count": lambda i: _nats_call(nc, f"{prefix}.query.count", COUNT_BODY),
    }


def echo_request(nc: NatsClient, subject: str, ids: Sequence[str]) -> Request:
    return lambda i: _nats_call(nc, subject, {"id": ids[i % len(ids)]})


async def seed_prefect(client: Any, count: int) -> list[str]:
    ids: list[str] = []
    # Few at a time: Prefect on SQLite drops connections under many concurrent writes.
    for start in range(0, count, 8):
        replies = await asyncio.gather(*(
            client.post("/flows/", json={"name": f"seed-{i:07d}", "tags": tags_of(i)})
            for i in range(start, min(count, start + 8))))  # fmt: skip
        for reply in replies:
            reply.raise_for_status()
            ids.append(reply.json()["id"])
    return ids


def prefect_requests(client: Any, ids: Sequence[str], run_id: str) -> dict[str, Request]:
    """`client` is an httpx.AsyncClient on the server's /api."""

    def pick(i: int) -> str:
        return ids[i % len(ids)]

    async def ok(call: Any) -> bool:
        return bool(200 <= (await call).status_code < 300)

    return {
        "create": lambda i: ok(
            client.post("/flows/", json={"name": f"bench-{run_id}-{i}", "tags": ["db"]})
        ),
        "read": lambda i: ok(client.get(f"/flows/{pick(i)}")),
        "update": lambda i: ok(
            client.patch(f"/flows/{pick(i)}", json={"tags": tags_of(i % len(ids))})
        ),
        "filter": lambda i: ok(client.post("/flows/filter", json=FILTER_BODY)),
        "count": lambda i: ok(client.post("/flows/count", json=COUNT_BODY)),
    }
