"""Idempotent commands (CONTRACT.md): a retry with the same `Nats-Msg-Id` gets the same reply
(status, body, Flows-Position) and appends nothing new to the log."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from typing import Any

from nats.aio.client import Client as NatsClient

from services.settings import Settings
from tests.integration.conftest import Wire, running
from tests.integration.wire import WireReply, assert_success, call, stream_messages


def msg_id() -> str:
    return f"cmd-{uuid.uuid4()}"


def same_reply(first: WireReply, again: WireReply) -> None:
    assert again.status == first.status
    assert again.data == first.data
    assert again.position == first.position
    assert again.position is not None


async def history(wire: Wire, flow_id: str) -> list[dict[str, Any]]:
    reply = await wire("audit.history", {"id": flow_id})
    assert_success(reply, 200)
    events: list[dict[str, Any]] = reply.json
    return events


async def create(wire: Wire, name: str) -> dict[str, Any]:
    reply = await wire("cmd.create", {"name": name})
    assert_success(reply, 201)
    flow: dict[str, Any] = reply.json
    return flow


class TestRetries:
    async def test_create(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        headers = {"Nats-Msg-Id": msg_id()}
        body = {"name": "retried", "tags": ["a"], "labels": {"k": "v"}}
        first = await wire("cmd.create", body, headers)
        assert_success(first, 201)
        appended = await stream_messages(nc, service.stream)

        for _ in range(3):
            same_reply(first, await wire("cmd.create", body, headers))
        assert await stream_messages(nc, service.stream) == appended
        events = await history(wire, first.json["id"])
        assert [event["type"] for event in events] == ["FlowCreated"]
        assert events[0]["metadata"]["command_id"] == headers["Nats-Msg-Id"]
        assert (await wire("query.count")).data == b"1"

    async def test_update(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        flow = await create(wire, "to-update")
        headers = {"Nats-Msg-Id": msg_id()}
        body = {"id": flow["id"], "tags": ["x"]}
        first = await wire("cmd.update", body, headers)
        assert_success(first, 204)
        row = (await wire("query.read", {"id": flow["id"]})).data
        appended = await stream_messages(nc, service.stream)

        for _ in range(3):
            same_reply(first, await wire("cmd.update", body, headers))
        assert await stream_messages(nc, service.stream) == appended
        assert (await wire("query.read", {"id": flow["id"]})).data == row  # `updated` unmoved
        types = [event["type"] for event in await history(wire, flow["id"])]
        assert types == ["FlowCreated", "FlowUpdated"]

    async def test_an_empty_update(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        flow = await create(wire, "to-touch")
        headers = {"Nats-Msg-Id": msg_id()}
        first = await wire("cmd.update", {"id": flow["id"]}, headers)
        assert_success(first, 204)
        appended = await stream_messages(nc, service.stream)
        same_reply(first, await wire("cmd.update", {"id": flow["id"]}, headers))
        assert await stream_messages(nc, service.stream) == appended

    async def test_delete(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        flow = await create(wire, "to-delete")
        headers = {"Nats-Msg-Id": msg_id()}
        first = await wire("cmd.delete", {"id": flow["id"]}, headers)
        assert_success(first, 204)
        appended = await stream_messages(nc, service.stream)

        # A retry is not a second delete: it gets the 204 again, not a 404.
        for _ in range(3):
            same_reply(first, await wire("cmd.delete", {"id": flow["id"]}, headers))
        assert await stream_messages(nc, service.stream) == appended
        types = [event["type"] for event in await history(wire, flow["id"])]
        assert types == ["FlowCreated", "FlowDeleted"]
        # Without the id, deleting again is an ordinary 404.
        assert (await wire("cmd.delete", {"id": flow["id"]})).status == 404

    async def test_bulk_delete(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        flows = [await create(wire, name) for name in ("b1", "b2", "b3")]
        headers = {"Nats-Msg-Id": msg_id()}
        body = {"flows": {"name": {"any_": ["b1", "b2"]}}}
        first = await wire("cmd.bulk_delete", body, headers)
        assert_success(first, 200)
        assert first.json == {"deleted": [flows[0]["id"], flows[1]["id"]]}
        appended = await stream_messages(nc, service.stream)

        for _ in range(3):
            same_reply(first, await wire("cmd.bulk_delete", body, headers))
        assert await stream_messages(nc, service.stream) == appended
        assert [f["name"] for f in (await wire("query.filter")).json] == ["b3"]

    async def test_a_bulk_delete_that_deleted_nothing(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        await create(wire, "untouched")
        headers = {"Nats-Msg-Id": msg_id()}
        body = {"flows": {"name": {"any_": ["nope"]}}}
        first = await wire("cmd.bulk_delete", body, headers)
        assert_success(first, 200)
        assert first.data == b'{"deleted":[]}'
        appended = await stream_messages(nc, service.stream)
        # Had the matching flow appeared meanwhile, the retry still answers the first reply.
        await create(wire, "nope")
        appended += 2
        same_reply(first, await wire("cmd.bulk_delete", body, headers))
        assert await stream_messages(nc, service.stream) == appended
        assert (await wire("query.count")).data == b"2"

    async def test_a_create_that_found_its_name_taken(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        flow = await create(wire, "taken")
        headers = {"Nats-Msg-Id": msg_id()}
        first = await wire("cmd.create", {"name": "taken", "tags": ["mine"]}, headers)
        assert_success(first, 200)
        assert first.json == flow
        # The row changes afterwards; the retry still gets the reply the command got.
        assert_success(await wire("cmd.update", {"id": flow["id"], "tags": ["later"]}), 204)
        appended = await stream_messages(nc, service.stream)
        again = await wire("cmd.create", {"name": "taken", "tags": ["mine"]}, headers)
        same_reply(first, again)
        assert await stream_messages(nc, service.stream) == appended
        events = await history(wire, flow["id"])
        assert [event["type"] for event in events] == ["FlowCreated", "FlowUpdated"]

    async def test_a_create_retried_after_the_flow_was_deleted_does_not_recreate_it(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        headers = {"Nats-Msg-Id": msg_id()}
        first = await wire("cmd.create", {"name": "short-lived"}, headers)
        assert_success(first, 201)
        assert_success(await wire("cmd.delete", {"id": first.json["id"]}), 204)
        appended = await stream_messages(nc, service.stream)
        same_reply(first, await wire("cmd.create", {"name": "short-lived"}, headers))
        assert await stream_messages(nc, service.stream) == appended
        assert (await wire("query.read_by_name", {"name": "short-lived"})).status == 404

    async def test_refused_commands_can_be_retried_and_stay_refused(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        headers = {"Nats-Msg-Id": msg_id()}
        unknown = {"id": str(uuid.uuid4()), "tags": ["x"]}
        before = await stream_messages(nc, service.stream)
        for _ in range(2):
            assert (await wire("cmd.update", unknown, headers)).status == 404
            assert (await wire("cmd.create", {"name": "a/b"}, {"Nats-Msg-Id": "bad"})).status == 422
        assert await stream_messages(nc, service.stream) == before

    async def test_a_different_id_is_a_different_command(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        flow = await create(wire, "twice")
        body = {"id": flow["id"], "tags": ["same"]}
        first = await wire("cmd.update", body, {"Nats-Msg-Id": msg_id()})
        after_first = await stream_messages(nc, service.stream)
        second = await wire("cmd.update", body, {"Nats-Msg-Id": msg_id()})
        assert_success(second, 204)
        assert second.position is not None
        assert first.position is not None
        assert second.position > first.position
        assert await stream_messages(nc, service.stream) > after_first
        # and without any id, every send is a new command
        without = [await wire("cmd.update", body) for _ in range(2)]
        assert without[0].position != without[1].position
        events = await history(wire, flow["id"])
        assert [event["type"] for event in events] == ["FlowCreated"] + ["FlowUpdated"] * 4

    async def test_a_retry_long_after_jetstreams_duplicate_window(
        self, settings: Settings, nc: NatsClient
    ) -> None:
        """The promise is 24 h; JetStream's own de-duplication only covers its window."""
        short = dataclasses.replace(settings, duplicate_window_s=0.5)
        async with running(short, nc):
            prefix = short.subject_prefix
            headers = {"Nats-Msg-Id": msg_id()}
            first = await call(nc, prefix, "cmd.create", {"name": "patient"}, headers)
            assert_success(first, 201)
            appended = await stream_messages(nc, short.stream)
            # Time passing is what is tested here, not something to synchronise with.
            await asyncio.sleep(0.6)
            same_reply(first, await call(nc, prefix, "cmd.create", {"name": "patient"}, headers))
            assert await stream_messages(nc, short.stream) == appended


class TestConcurrentDuplicates:
    """The same command with the same id sent 10 times at once: one effect, one reply."""

    async def gather(self, wire: Wire, operation: str, body: dict[str, Any]) -> WireReply:
        headers = {"Nats-Msg-Id": msg_id()}
        replies = await asyncio.gather(*(wire(operation, body, headers) for _ in range(10)))
        for reply in replies[1:]:
            same_reply(replies[0], reply)
        return replies[0]

    async def test_create(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        before = await stream_messages(nc, service.stream)
        reply = await self.gather(wire, "cmd.create", {"name": "dup"})
        assert_success(reply, 201)
        # one event, one name marker, one stored reply
        assert await stream_messages(nc, service.stream) == before + 3
        events = await history(wire, reply.json["id"])
        assert [event["type"] for event in events] == ["FlowCreated"]
        assert (await wire("query.count")).data == b"1"

    async def test_update(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        flow = await create(wire, "dup-update")
        before = await stream_messages(nc, service.stream)
        reply = await self.gather(wire, "cmd.update", {"id": flow["id"], "tags": ["t"]})
        assert_success(reply, 204)
        assert await stream_messages(nc, service.stream) == before + 2
        types = Counter(event["type"] for event in await history(wire, flow["id"]))
        assert types == {"FlowCreated": 1, "FlowUpdated": 1}

    async def test_delete(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        flow = await create(wire, "dup-delete")
        before = await stream_messages(nc, service.stream)
        reply = await self.gather(wire, "cmd.delete", {"id": flow["id"]})
        assert_success(reply, 204)
        assert await stream_messages(nc, service.stream) == before + 3
        types = Counter(event["type"] for event in await history(wire, flow["id"]))
        assert types == {"FlowCreated": 1, "FlowDeleted": 1}

    async def test_bulk_delete(self, wire: Wire, nc: NatsClient, service: Settings) -> None:
        flows = [await create(wire, f"dup-bulk-{i}") for i in range(3)]
        before = await stream_messages(nc, service.stream)
        reply = await self.gather(wire, "cmd.bulk_delete", {})
        assert_success(reply, 200)
        assert reply.json == {"deleted": [flow["id"] for flow in flows]}
        assert await stream_messages(nc, service.stream) == before + 2 * 3 + 1
        deleted = await wire("audit.events", {"types": ["FlowDeleted"]})
        assert sorted(event["flow_id"] for event in deleted.json) == sorted(
            flow["id"] for flow in flows
        )
