"""Read-your-writes (CONTRACT.md): queries after a command's reply see it; `Flows-Min-Position`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from services.client import FlowsClient
from services.settings import Settings
from tests.integration.conftest import Wire, projector_held
from tests.integration.wire import assert_error, assert_success

# A query that may answer at once must not have waited anything like its Flows-Wait-Ms.
PROMPT_S = 2.0


async def log_end(nc: NatsClient, settings: Settings) -> int:
    info = await nc.jetstream().stream_info(settings.stream)
    return int(info.state.last_seq)


class TestReadYourWrites:
    async def test_every_query_after_a_command_reply_sees_it(self, client: FlowsClient) -> None:
        """No header: each query is sent right after the command's reply, many times over."""
        for i in range(40):
            name = f"ryw-{i}"
            created = (await client.create(name, tags=["v0"])).raise_for_status()
            flow_id = created.body["id"]
            read = await client.read(flow_id)
            assert read.status == 200, (i, read)
            assert read.body == created.body
            assert (await client.read_by_name(name)).body == created.body

            (await client.update(flow_id, tags=[f"v{i}"])).raise_for_status()
            assert (await client.read(flow_id)).body["tags"] == [f"v{i}"]
            tagged = await client.filter(flows={"tags": {"all_": [f"v{i}"]}})
            assert [flow["id"] for flow in tagged.body] == [flow_id]

            (await client.delete(flow_id)).raise_for_status()
            assert (await client.read(flow_id)).status == 404, i
            assert (await client.read_by_name(name)).status == 404, i
            assert (await client.count(flows={"name": {"any_": [name]}})).body == 0

            if i % 2 == 0:  # leave every other name alive: the count must follow each step
                recreated = (await client.create(name)).raise_for_status()
                assert recreated.status == 201
                page = await client.paginate(flows={"name": {"any_": [name]}})
                assert [flow["id"] for flow in page.body["results"]] == [recreated.body["id"]]
            assert (await client.count()).body == i // 2 + 1

    async def test_bulk_delete_is_seen_at_once(self, client: FlowsClient) -> None:
        for i in range(10):
            names = [f"bulk-{i}-{j}" for j in range(5)]
            for name in names:
                (await client.create(name)).raise_for_status()
            deleted = await client.bulk_delete(flows={"name": {"like_": f"bulk-{i}-"}})
            assert len(deleted.body["deleted"]) == 5
            assert (await client.count()).body == 0, i

    async def test_concurrent_writers_each_read_their_own_writes(self, client: FlowsClient) -> None:
        async def writer(w: int) -> None:
            for i in range(10):
                name = f"w{w}-{i}"
                created = (await client.create(name, tags=[name])).raise_for_status()
                read = await client.read(created.body["id"])
                assert read.body == created.body, (w, i)
                (await client.update(created.body["id"], tags=["done"])).raise_for_status()
                assert (await client.read_by_name(name)).body["tags"] == ["done"], (w, i)

        await asyncio.gather(*(writer(w) for w in range(8)))
        assert (await client.count()).body == 80


class TestMinPosition:
    @pytest.mark.parametrize(
        ("operation", "body"),
        [
            ("query.read", {"id": "00000000-0000-4000-8000-000000000000"}),
            ("query.read_by_name", {"name": "x"}),
            ("query.filter", {}),
            ("query.count", {}),
            ("query.paginate", {}),
        ],
    )
    async def test_a_position_beyond_the_log_is_refused_at_once(
        self, wire: Wire, nc: NatsClient, service: Settings, operation: str, body: Any
    ) -> None:
        """No command handed such a position out: waiting for it could only run out."""
        assert_success(await wire("cmd.create", {"name": "something"}), 201)
        end = await log_end(nc, service)
        for beyond, wait_ms in ((end + 1, "60000"), (10**12, "60000"), (end + 1, "0")):
            started = time.monotonic()
            reply = await wire(
                operation, body, {"Flows-Min-Position": str(beyond), "Flows-Wait-Ms": wait_ms}
            )
            assert time.monotonic() - started < PROMPT_S
            assert_error(reply, 422)
            assert reply.json["exception_detail"] == [
                {
                    "type": "less_than_equal",
                    "loc": ["header", "Flows-Min-Position"],
                    "msg": (
                        f"Input should be less than or equal to {end}, the event log's last "
                        "position (use a Flows-Position a command reply carried)"
                    ),
                    "input": str(beyond),
                    "ctx": {"le": end},
                }
            ]

    async def test_a_zero_wait_answers_503_at_once(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        async with projector_held(service):
            created = await wire("cmd.create", {"name": "unapplied"})
            assert_success(created, 201)
            started = time.monotonic()
            reply = await wire(
                "query.count",
                None,
                {"Flows-Min-Position": str(created.position), "Flows-Wait-Ms": "0"},
            )
            assert_error(reply, 503)
            assert time.monotonic() - started < PROMPT_S

    async def test_a_position_at_or_below_the_applied_one_answers_at_once(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        created = await wire("cmd.create", {"name": "here"})
        position = created.position
        assert position is not None
        assert position == await log_end(nc, service)
        for wanted in (position, position - 1, 1, 0):
            started = time.monotonic()
            reply = await wire(
                "query.read_by_name",
                {"name": "here"},
                {"Flows-Min-Position": str(wanted), "Flows-Wait-Ms": "5000"},
            )
            assert_success(reply, 200)
            assert reply.data == created.data
            assert time.monotonic() - started < PROMPT_S, wanted

    async def test_a_waiting_query_is_answered_as_soon_as_the_position_is_applied(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        async with projector_held(service):
            created = await wire("cmd.create", {"name": "late"})
            assert_success(created, 201)
            waiting = asyncio.create_task(
                wire(
                    "query.read_by_name",
                    {"name": "late"},
                    {"Flows-Min-Position": str(created.position), "Flows-Wait-Ms": "10000"},
                )
            )
            # The position is in the log but not applied: the query waits for it.
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            assert not done, "a query for a position not yet applied answered early"
            released = time.monotonic()
        reply = await waiting
        assert_success(reply, 200)
        assert reply.data == created.data
        assert time.monotonic() - released < PROMPT_S

    async def test_the_command_position_lets_any_client_read_its_write(
        self, wire: Wire, client: FlowsClient
    ) -> None:
        created = await client.create("positioned")
        assert created.position is not None
        read = await client.read_by_name("positioned", min_position=created.position, wait_ms=5000)
        assert read.status == 200
        assert read.body == created.body

    @pytest.mark.parametrize(
        ("header", "value"),
        [
            ("Flows-Min-Position", "abc"),
            ("Flows-Min-Position", "-1"),
            ("Flows-Min-Position", "1.5"),
            ("Flows-Min-Position", "0x10"),
            ("Flows-Wait-Ms", "abc"),
            ("Flows-Wait-Ms", "-5"),
            ("Flows-Wait-Ms", "2.5"),
        ],
    )
    async def test_invalid_header_values_are_422(self, wire: Wire, header: str, value: str) -> None:
        for operation in ("query.count", "query.filter", "query.read_by_name"):
            reply = await wire(operation, {"name": "x"}, {header: value})
            assert_error(reply, 422)
            body = reply.json
            assert body["exception_message"] == "Invalid request received."
            assert [error["loc"] for error in body["exception_detail"]] == [["header", header]]
            assert body["exception_detail"][0]["input"] == value
