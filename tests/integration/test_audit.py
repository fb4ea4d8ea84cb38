"""Audit straight from the log: `P.audit.history`, `P.audit.events` and the events' contents
(CONTRACT.md, "The event log")."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from events.timefmt import parse_datetime
from services.settings import Settings
from tests.integration.conftest import Wire
from tests.integration.wire import (
    TIMESTAMP,
    UUID_TEXT,
    assert_error,
    assert_success,
    stream_messages,
)

FIELDS = {"id", "type", "flow_id", "occurred", "data", "metadata", "position"}


async def history(wire: Wire, flow_id: str) -> list[dict[str, Any]]:
    reply = await wire("audit.history", {"id": flow_id})
    assert_success(reply, 200)
    events: list[dict[str, Any]] = reply.json
    return events


async def events(wire: Wire, **body: Any) -> list[dict[str, Any]]:
    reply = await wire("audit.events", body)
    assert_success(reply, 200)
    found: list[dict[str, Any]] = reply.json
    return found


async def create(wire: Wire, name: str, **fields: Any) -> dict[str, Any]:
    reply = await wire("cmd.create", {"name": name, **fields})
    assert_success(reply, 201)
    flow: dict[str, Any] = reply.json
    return flow


def assert_recorded(event: dict[str, Any], flow_id: str) -> None:
    assert set(event) >= FIELDS, set(event)
    assert UUID_TEXT.match(event["id"]), event["id"]
    assert event["flow_id"] == flow_id
    assert TIMESTAMP.match(event["occurred"]), event["occurred"]
    assert isinstance(event["metadata"], dict)
    assert isinstance(event["metadata"].get("command_id"), str)
    assert event["metadata"]["command_id"]
    assert isinstance(event["position"], int)
    assert event["position"] > 0


class TestHistory:
    async def test_a_flows_life_oldest_first(self, wire: Wire) -> None:
        created = await wire(
            "cmd.create",
            {"name": "lived", "tags": ["a"], "labels": {"env": "dev", "n": 1}},
            {"Nats-Msg-Id": "create-lived"},
        )
        assert_success(created, 201)
        flow = created.json
        tagged = await wire("cmd.update", {"id": flow["id"], "tags": ["b", "c"]})
        after_tags = (await wire("query.read", {"id": flow["id"]})).json
        touched = await wire("cmd.update", {"id": flow["id"]}, {"Nats-Msg-Id": "touch-lived"})
        after_touch = (await wire("query.read", {"id": flow["id"]})).json
        deleted = await wire("cmd.delete", {"id": flow["id"]}, {"Nats-Msg-Id": "delete-lived"})
        assert_success(deleted, 204)

        found = await history(wire, flow["id"])
        assert [event["type"] for event in found] == [
            "FlowCreated", "FlowUpdated", "FlowUpdated", "FlowDeleted",
        ]  # fmt: skip
        for event in found:
            assert_recorded(event, flow["id"])
        assert len({event["id"] for event in found}) == 4
        positions = [event["position"] for event in found]
        assert positions == sorted(positions)
        assert len(set(positions)) == 4

        # The data of each type, exactly as the contract lists it.
        assert found[0]["data"] == {
            "name": "lived",
            "tags": ["a"],
            "labels": {"env": "dev", "n": 1},
        }
        assert found[1]["data"] == {"tags": ["b", "c"]}
        assert found[2]["data"] == {}
        assert found[3]["data"] == {"name": "lived"}

        # `occurred` is what the read model shows as created/updated.
        assert found[0]["occurred"] == flow["created"]
        assert found[1]["occurred"] == after_tags["updated"]
        assert found[2]["occurred"] == after_touch["updated"]
        moments = [parse_datetime(event["occurred"]) for event in found]
        assert moments[0] < moments[1] < moments[2] <= moments[3]

        # The command ids: the Nats-Msg-Id where one was given.
        assert found[0]["metadata"]["command_id"] == "create-lived"
        assert found[2]["metadata"]["command_id"] == "touch-lived"
        assert found[3]["metadata"]["command_id"] == "delete-lived"

        # Positions against the command replies: visible at or before the reply's position.
        replies = [created, tagged, touched, deleted]
        for event, reply in zip(found, replies, strict=True):
            assert reply.position is not None
            assert event["position"] <= reply.position
        assert found[1]["position"] == tagged.position  # a lone event is its own position

    async def test_labels_null_is_recorded_as_null(self, wire: Wire) -> None:
        flow = await create(wire, "no-labels", labels=None)
        assert (await history(wire, flow["id"]))[0]["data"] == {
            "name": "no-labels", "tags": [], "labels": None,
        }  # fmt: skip

    async def test_events_are_never_changed(self, wire: Wire) -> None:
        flow = await create(wire, "stable", tags=["x"])
        assert_success(await wire("cmd.update", {"id": flow["id"], "tags": ["y"]}), 204)
        before = await history(wire, flow["id"])
        assert_success(await wire("cmd.delete", {"id": flow["id"]}), 204)
        await create(wire, "stable")  # the name again, a new flow
        after = await history(wire, flow["id"])
        assert after[: len(before)] == before
        assert len(after) == len(before) + 1

    async def test_an_unknown_flow_has_no_history(self, wire: Wire) -> None:
        await create(wire, "someone-else")
        assert await history(wire, str(uuid.uuid4())) == []

    @pytest.mark.parametrize("body", [{}, {"id": "nope"}, {"id": 3}, b"{"])
    async def test_a_bad_request_is_a_validation_error(self, wire: Wire, body: Any) -> None:
        reply = await wire("audit.history", body)
        assert_error(reply, 422)
        assert reply.json["exception_message"] == "Invalid request received."
        for error in reply.json["exception_detail"]:
            assert error["loc"][0] == "body"


class TestEvents:
    @pytest.fixture
    async def log(self, wire: Wire) -> list[dict[str, Any]]:
        """A log with every event type, some sent with command ids (stored replies between)."""
        flows = [await create(wire, f"f{i}", tags=[f"t{i}"]) for i in range(6)]
        for i, flow in enumerate(flows[:4]):
            headers = {"Nats-Msg-Id": f"upd-{i}"} if i % 2 else None
            assert_success(await wire("cmd.update", {"id": flow["id"], "tags": []}, headers), 204)
        assert_success(await wire("cmd.delete", {"id": flows[0]["id"]}), 204)
        assert_success(await wire("cmd.bulk_delete", {"flows": {"name": {"any_": ["f4", "f5"]}}},
                                  {"Nats-Msg-Id": "bulk"}), 200)  # fmt: skip
        everything = await events(wire, limit=1000)
        assert len(everything) == 6 + 4 + 3
        return everything

    async def test_the_whole_log_in_order(self, wire: Wire, log: list[dict[str, Any]]) -> None:
        assert await events(wire) == log  # default: after 0, limit 100
        positions = [event["position"] for event in log]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)
        assert {event["type"] for event in log} == {"FlowCreated", "FlowUpdated", "FlowDeleted"}
        for event in log:
            assert_recorded(event, event["flow_id"])
        deleted = [event["data"] for event in log if event["type"] == "FlowDeleted"]
        assert deleted == [{"name": "f0"}, {"name": "f4"}, {"name": "f5"}]
        updates = [event for event in log if event["type"] == "FlowUpdated"]
        assert [event["data"] for event in updates] == [{"tags": []}] * 4
        assert [event["metadata"]["command_id"] for event in updates][1::2] == ["upd-1", "upd-3"]
        bulk = [event for event in log if event["metadata"]["command_id"] == "bulk"]
        assert [event["data"]["name"] for event in bulk] == ["f4", "f5"]

    @pytest.mark.parametrize("limit", [1, 2, 3, 5, 13, 1000])
    async def test_paging_by_position(
        self, wire: Wire, log: list[dict[str, Any]], limit: int
    ) -> None:
        collected: list[dict[str, Any]] = []
        after = 0
        while True:
            page = await events(wire, after=after, limit=limit)
            assert len(page) <= limit
            assert all(event["position"] > after for event in page)
            if not page:
                break
            collected.extend(page)
            after = page[-1]["position"]
        assert collected == log

    async def test_after_a_position_in_the_middle(
        self, wire: Wire, log: list[dict[str, Any]]
    ) -> None:
        middle = log[5]["position"]
        assert await events(wire, after=middle) == log[6:]
        assert await events(wire, after=middle - 1) == log[5:]
        assert await events(wire, after=log[-1]["position"]) == []
        assert await events(wire, after=10**9) == []

    async def test_one_flows_events(self, wire: Wire, log: list[dict[str, Any]]) -> None:
        flow_id = log[0]["flow_id"]
        mine = [event for event in log if event["flow_id"] == flow_id]
        assert [event["type"] for event in mine] == ["FlowCreated", "FlowUpdated", "FlowDeleted"]
        assert await events(wire, flow_id=flow_id) == mine
        assert await events(wire, flow_id=flow_id, limit=1) == mine[:1]
        assert await events(wire, flow_id=flow_id, after=mine[0]["position"]) == mine[1:]
        assert await history(wire, flow_id) == mine
        assert await events(wire, flow_id=flow_id.upper()) == mine
        assert await events(wire, flow_id=str(uuid.uuid4())) == []

    @pytest.mark.parametrize(
        "types",
        [["FlowDeleted"], ["FlowCreated", "FlowDeleted"], ["FlowUpdated"], ["FlowCreated"]],
    )
    async def test_by_type(self, wire: Wire, log: list[dict[str, Any]], types: list[str]) -> None:
        wanted = [event for event in log if event["type"] in types]
        assert await events(wire, types=types) == wanted
        assert await events(wire, types=types, limit=2) == wanted[:2]
        after = wanted[0]["position"]
        assert await events(wire, types=types, after=after, limit=1) == wanted[1:2]

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"limit": 0}, ["body", "limit"]),
            ({"limit": 1001}, ["body", "limit"]),
            ({"limit": -1}, ["body", "limit"]),
            ({"limit": "many"}, ["body", "limit"]),
            ({"after": -1}, ["body", "after"]),
            ({"types": ["FlowRenamed"]}, ["body", "types", 0]),
            ({"types": "FlowCreated"}, ["body", "types"]),
            ({"flow_id": "nope"}, ["body", "flow_id"]),
            ({"bogus": 1}, ["body", "bogus"]),
        ],
    )
    async def test_bad_requests_are_validation_errors(
        self, wire: Wire, body: dict[str, Any], loc: list[Any]
    ) -> None:
        reply = await wire("audit.events", body)
        assert_error(reply, 422)
        assert reply.json["exception_message"] == "Invalid request received."
        assert [error["loc"] for error in reply.json["exception_detail"]] == [loc]
        assert reply.json["request_body"] == body

    @pytest.mark.parametrize("limit", [1, 1000])
    async def test_limits_1_and_1000_are_accepted(self, wire: Wire, limit: int) -> None:
        await create(wire, "a")
        await create(wire, "b")
        assert len(await events(wire, limit=limit)) == min(limit, 2)


class TestNothingRecordedForRefusals:
    async def test_404s_422s_and_create_200s_append_no_event(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        flow = await create(wire, "exists", tags=["t"])
        last = (await events(wire))[-1]["position"]
        messages = await stream_messages(nc, service.stream)
        unknown = str(uuid.uuid4())

        refused = [
            (await wire("cmd.update", {"id": unknown, "tags": ["x"]}), 404),
            (await wire("cmd.update", {"id": unknown}), 404),
            (await wire("cmd.delete", {"id": unknown}), 404),
            (await wire("cmd.update", {"id": flow["id"], "name": "x"}), 422),
            (await wire("cmd.update", {"id": flow["id"], "tags": None}), 422),
            (await wire("cmd.create", {"name": "a/b"}), 422),
            (await wire("cmd.create", b"{"), 422),
            (await wire("cmd.bulk_delete", {"limit": 0}), 422),
            (await wire("cmd.create", {"name": "exists", "tags": ["other"]}), 200),
            (await wire("cmd.bulk_delete", {"flows": {"id": {"any_": [unknown]}}}), 200),
        ]
        for reply, status in refused:
            assert reply.status == status, (reply.status, reply.data)
        assert await events(wire, after=last) == []
        assert await stream_messages(nc, service.stream) == messages
        assert (await wire("query.read", {"id": flow["id"]})).json == flow

    async def test_a_create_200_with_a_command_id_stores_a_reply_but_no_event(
        self, wire: Wire
    ) -> None:
        flow = await create(wire, "exists")
        last = (await events(wire))[-1]["position"]
        again = await wire("cmd.create", {"name": "exists"}, {"Nats-Msg-Id": "again"})
        assert_success(again, 200)
        assert await events(wire, after=last) == []
        assert [event["type"] for event in await history(wire, flow["id"])] == ["FlowCreated"]
