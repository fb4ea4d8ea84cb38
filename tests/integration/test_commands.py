"""Commands on the wire: create, update, delete, bulk_delete (CONTRACT.md; Prefect §2-§3, §6).

Raw nats-py requests, so every check sees the exact headers and body bytes the service sent; on
a real nats-server, or in-process under `pytest --transport=memory` (tests/integration/transport.py).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from events.timefmt import parse_datetime
from services.client import FlowsClient
from tests.integration.conftest import Wire
from tests.integration.wire import (
    WireReply,
    assert_error,
    assert_flow,
    assert_success,
    assert_validation_error,
)

PATTERN = "^[^/%&><]+$"
NOT_FOUND = b'{"detail":"Flow not found"}'

pytestmark = pytest.mark.in_process


def pattern_error(name: str) -> dict[str, Any]:
    return {
        "type": "string_pattern_mismatch",
        "loc": ["body", "name"],
        "msg": f"String should match pattern '{PATTERN}'",
        "input": name,
        "ctx": {"pattern": PATTERN},
    }


async def create(wire: Wire, name: str, **fields: Any) -> dict[str, Any]:
    reply = await wire("cmd.create", {"name": name, **fields})
    assert_success(reply, 201)
    body: dict[str, Any] = reply.json
    return body


async def history(wire: Wire, flow_id: str) -> list[dict[str, Any]]:
    reply = await wire("audit.history", {"id": flow_id})
    assert_success(reply, 200)
    events: list[dict[str, Any]] = reply.json
    return events


def assert_position(reply: WireReply) -> int:
    raw = reply.headers.get("Flows-Position")
    assert raw is not None, f"no Flows-Position on a command reply: {reply.headers}"
    assert raw.isdigit(), raw
    return int(raw)


class TestCreate:
    async def test_a_new_name_answers_201_with_the_flow_as_prefect_serialises_it(
        self, wire: Wire
    ) -> None:
        before = datetime.now(UTC)
        reply = await wire(
            "cmd.create", {"name": "my-flow", "tags": ["a", "b"], "labels": {"env": "dev", "n": 1}}
        )
        assert_success(reply, 201)
        flow = assert_flow(
            reply.json, name="my-flow", tags=["a", "b"], labels={"env": "dev", "n": 1}
        )
        assert parse_datetime(flow["created"]) >= before
        assert parse_datetime(flow["updated"]) >= before
        # Compact JSON in Prefect's key order, byte for byte.
        assert reply.data == orjson.dumps(flow)
        assert reply.data.startswith(b'{"id":"' + flow["id"].encode() + b'","created":"')
        assert assert_position(reply) > 0

    async def test_minimal_body_defaults_tags_and_labels(self, wire: Wire) -> None:
        flow = await create(wire, "Minimal")
        assert_flow(flow, name="Minimal", tags=[], labels={})

    async def test_labels_null_is_stored_and_echoed_as_null(self, wire: Wire) -> None:
        reply = await wire("cmd.create", {"name": "labels-null", "labels": None})
        assert_success(reply, 201)
        assert b'"labels":null}' in reply.data
        read = await wire("query.read", {"id": reply.json["id"]})
        assert read.data == reply.data

    async def test_label_values_keep_their_json_types(self, wire: Wire) -> None:
        labels = {"flag": True, "n": 3, "x": 1.5, "s": "3"}
        flow = await create(wire, "typed-labels", labels=labels)
        read = await wire("query.read", {"id": flow["id"]})
        assert read.json["labels"] == labels
        assert b'"labels":{"flag":true,"n":3,"x":1.5,"s":"3"}' in read.data

    async def test_duplicate_tags_and_their_order_are_kept(self, wire: Wire) -> None:
        flow = await create(wire, "dup-tags", tags=["b", "a", "b"])
        assert flow["tags"] == ["b", "a", "b"]
        read = await wire("query.read", {"id": flow["id"]})
        assert read.json["tags"] == ["b", "a", "b"]

    async def test_an_existing_name_answers_200_with_the_stored_row_unchanged(
        self, wire: Wire
    ) -> None:
        first = await wire(
            "cmd.create", {"name": "my-flow", "tags": ["a", "b"], "labels": {"env": "dev", "n": 1}}
        )
        again = await wire(
            "cmd.create", {"name": "my-flow", "tags": ["zzz"], "labels": {"other": True}}
        )
        assert_success(again, 200)
        assert again.data == first.data  # same id, created, updated, tags, labels
        read = await wire("query.read", {"id": first.json["id"]})
        assert read.data == first.data
        count = await wire("query.count", {"flows": {"name": {"any_": ["my-flow"]}}})
        assert count.data == b"1"

    async def test_the_200_carries_the_position_of_the_existing_flows_latest_event(
        self, wire: Wire
    ) -> None:
        flow = await create(wire, "positioned", tags=["x"])
        again = await wire("cmd.create", {"name": "positioned"})
        assert_success(again, 200)
        events = await history(wire, flow["id"])
        assert assert_position(again) == events[-1]["position"]

        update = await wire("cmd.update", {"id": flow["id"], "tags": ["y"]})
        assert_success(update, 204)
        after_update = await wire("cmd.create", {"name": "positioned", "tags": ["ignored"]})
        assert_success(after_update, 200)
        events = await history(wire, flow["id"])
        assert events[-1]["type"] == "FlowUpdated"
        assert assert_position(after_update) == events[-1]["position"]
        # The stored row as it now is: the update's tags and timestamp, not the request's.
        read = await wire("query.read", {"id": flow["id"]})
        assert after_update.data == read.data
        assert after_update.json["tags"] == ["y"]
        assert parse_datetime(after_update.json["updated"]) > parse_datetime(flow["updated"])
        assert after_update.json["created"] == flow["created"]

    async def test_names_are_case_sensitive(self, wire: Wire) -> None:
        lower = await create(wire, "my-flow")
        upper = await create(wire, "MY-FLOW")
        assert lower["id"] != upper["id"]

    @pytest.mark.parametrize(
        "name",
        [
            # Prefect test facts A4 and G92
            "my flow",
            "my:flow",
            "my\\flow",
            "my👍flow",
            "my|flow",
            "my-object",
            "my;object",
            "my⁉️object",
            # §2.2: no trimming, no normalisation, no maximum length
            "   ",
            " leading and trailing ",
            "tab\there",
            "new\nline",
            "quote'\"s",
            "under_score",
            "x" * 2000,
        ],
    )
    async def test_accepted_names_round_trip_verbatim(self, wire: Wire, name: str) -> None:
        flow = await create(wire, name)
        assert flow["name"] == name
        by_name = await wire("query.read_by_name", {"name": name})
        assert_success(by_name, 200)
        assert by_name.json["id"] == flow["id"]
        assert by_name.json["name"] == name

    @pytest.mark.parametrize("name", ["my/flow", "my%flow", "a&b", "a>b", "a<b", "/", ""])
    async def test_names_with_banned_characters_or_empty_are_rejected(
        self, wire: Wire, name: str
    ) -> None:
        reply = await wire("cmd.create", {"name": name})
        assert_validation_error(reply, [pattern_error(name)], {"name": name})
        count = await wire("query.count")
        assert count.data == b"0"

    @pytest.mark.parametrize(
        ("body", "errors"),
        [
            (
                {"tags": []},
                [{"type": "missing", "loc": ["body", "name"], "msg": "Field required",
                  "input": {"tags": []}}],
            ),
            (
                {"name": "x-extra", "foo": 1},
                [{"type": "extra_forbidden", "loc": ["body", "foo"],
                  "msg": "Extra inputs are not permitted", "input": 1}],
            ),
            (
                {"name": "x", "id": "16f3851d-39da-4c5a-9d99-c10251805eb4"},
                [{"type": "extra_forbidden", "loc": ["body", "id"],
                  "msg": "Extra inputs are not permitted",
                  "input": "16f3851d-39da-4c5a-9d99-c10251805eb4"}],
            ),
            (
                {"name": None},
                [{"type": "string_type", "loc": ["body", "name"],
                  "msg": "Input should be a valid string", "input": None}],
            ),
            (
                {"name": 123},
                [{"type": "string_type", "loc": ["body", "name"],
                  "msg": "Input should be a valid string", "input": 123}],
            ),
            (
                {"name": "x", "tags": None},
                [{"type": "list_type", "loc": ["body", "tags"],
                  "msg": "Input should be a valid list", "input": None}],
            ),
            (
                {"name": "x", "tags": "a"},
                [{"type": "list_type", "loc": ["body", "tags"],
                  "msg": "Input should be a valid list", "input": "a"}],
            ),
            (
                {"name": "x", "tags": ["ok", 1]},
                [{"type": "string_type", "loc": ["body", "tags", 1],
                  "msg": "Input should be a valid string", "input": 1}],
            ),
            (
                {"name": "x-labels", "labels": {"a": {"b": 1}}},
                [
                    {"type": "bool_type", "loc": ["body", "labels", "a", "bool"],
                     "msg": "Input should be a valid boolean", "input": {"b": 1}},
                    {"type": "int_type", "loc": ["body", "labels", "a", "int"],
                     "msg": "Input should be a valid integer", "input": {"b": 1}},
                    {"type": "float_type", "loc": ["body", "labels", "a", "float"],
                     "msg": "Input should be a valid number", "input": {"b": 1}},
                    {"type": "string_type", "loc": ["body", "labels", "a", "str"],
                     "msg": "Input should be a valid string", "input": {"b": 1}},
                ],
            ),
            (
                {"name": "x-labels", "labels": {"a": None}},
                [
                    {"type": "bool_type", "loc": ["body", "labels", "a", "bool"],
                     "msg": "Input should be a valid boolean", "input": None},
                    {"type": "int_type", "loc": ["body", "labels", "a", "int"],
                     "msg": "Input should be a valid integer", "input": None},
                    {"type": "float_type", "loc": ["body", "labels", "a", "float"],
                     "msg": "Input should be a valid number", "input": None},
                    {"type": "string_type", "loc": ["body", "labels", "a", "str"],
                     "msg": "Input should be a valid string", "input": None},
                ],
            ),
        ],
    )  # fmt: skip
    async def test_invalid_bodies_get_prefects_validation_shape(
        self, wire: Wire, body: dict[str, Any], errors: list[dict[str, Any]]
    ) -> None:
        reply = await wire("cmd.create", body)
        assert_validation_error(reply, errors, body)

    async def test_malformed_json_is_json_invalid_at_its_character_offset(self, wire: Wire) -> None:
        reply = await wire("cmd.create", b'{"name": ')
        error = {
            "type": "json_invalid",
            "loc": ["body", 9],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "Expecting value"},
        }
        assert_validation_error(reply, [error], '{"name": ')

    async def test_a_json_null_body_is_a_missing_body(self, wire: Wire) -> None:
        reply = await wire("cmd.create", b"null")
        missing = {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
        assert_validation_error(reply, [missing], None)

    async def test_an_empty_payload_means_an_empty_object(self, wire: Wire) -> None:
        reply = await wire("cmd.create", b"")
        missing = {"type": "missing", "loc": ["body", "name"], "msg": "Field required", "input": {}}
        assert_validation_error(reply, [missing], {})

    async def test_a_non_object_body_is_rejected_as_prefect_does(self, wire: Wire) -> None:
        reply = await wire("cmd.create", b"[]")
        error = {
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": [],
        }
        assert_validation_error(reply, [error], [])


class TestUpdate:
    async def test_tags_are_replaced_and_updated_moves_on(self, wire: Wire) -> None:
        flow = await create(wire, "my-flow", tags=["db", "blue"], labels={"env": "dev"})
        reply = await wire("cmd.update", {"id": flow["id"], "tags": ["TB12"]})
        assert_success(reply, 204)
        assert reply.data == b""
        assert_position(reply)
        read = (await wire("query.read", {"id": flow["id"]})).json
        assert read["tags"] == ["TB12"]
        assert read["labels"] == {"env": "dev"}
        assert read["created"] == flow["created"]
        assert parse_datetime(read["updated"]) > parse_datetime(flow["updated"])

    async def test_an_empty_update_keeps_the_tags_and_still_bumps_updated(self, wire: Wire) -> None:
        flow = await create(wire, "bump-me", tags=["db", "blue"])
        first = await wire("cmd.update", {"id": flow["id"]})
        assert_success(first, 204)
        after_first = (await wire("query.read", {"id": flow["id"]})).json
        second = await wire("cmd.update", {"id": flow["id"]})
        assert_success(second, 204)
        after_second = (await wire("query.read", {"id": flow["id"]})).json
        assert after_first["tags"] == after_second["tags"] == ["db", "blue"]
        assert parse_datetime(after_first["updated"]) > parse_datetime(flow["updated"])
        assert parse_datetime(after_second["updated"]) > parse_datetime(after_first["updated"])
        assert after_second["created"] == flow["created"]

    async def test_an_empty_tag_list_clears_the_tags(self, wire: Wire) -> None:
        flow = await create(wire, "clear-me", tags=["db"])
        assert_success(await wire("cmd.update", {"id": flow["id"], "tags": []}), 204)
        read = (await wire("query.read", {"id": flow["id"]})).json
        assert read["tags"] == []
        is_null = await wire("query.filter", {"flows": {"tags": {"is_null_": True}}})
        assert [f["id"] for f in is_null.json] == [flow["id"]]

    async def test_any_uuid_spelling_of_the_id_names_the_flow(self, wire: Wire) -> None:
        flow = await create(wire, "spelled")
        dashless_upper = flow["id"].replace("-", "").upper()
        assert_success(await wire("cmd.update", {"id": dashless_upper, "tags": ["x"]}), 204)
        read = (await wire("query.read", {"id": flow["id"]})).json
        assert read["tags"] == ["x"]

    async def test_an_unknown_id_is_404(self, wire: Wire) -> None:
        reply = await wire("cmd.update", {"id": str(uuid.uuid4()), "tags": ["x"]})
        assert_error(reply, 404)
        assert reply.data == NOT_FOUND
        empty = await wire("cmd.update", {"id": str(uuid.uuid4())})
        assert_error(empty, 404)
        assert empty.data == NOT_FOUND

    async def test_a_deleted_flow_is_404(self, wire: Wire) -> None:
        flow = await create(wire, "gone")
        assert_success(await wire("cmd.delete", {"id": flow["id"]}), 204)
        reply = await wire("cmd.update", {"id": flow["id"], "tags": ["x"]})
        assert_error(reply, 404)
        assert reply.data == NOT_FOUND

    @pytest.mark.parametrize(
        ("extra", "error"),
        [
            ({"name": "renamed"}, {"type": "extra_forbidden", "loc": ["body", "name"],
                                   "msg": "Extra inputs are not permitted", "input": "renamed"}),
            ({"labels": {"a": "b"}}, {"type": "extra_forbidden", "loc": ["body", "labels"],
                                      "msg": "Extra inputs are not permitted",
                                      "input": {"a": "b"}}),
            ({"tags": None}, {"type": "list_type", "loc": ["body", "tags"],
                              "msg": "Input should be a valid list", "input": None}),
        ],
    )  # fmt: skip
    @pytest.mark.parametrize("exists", [True, False], ids=["known-id", "unknown-id"])
    async def test_validation_comes_before_the_existence_check(
        self, wire: Wire, extra: dict[str, Any], error: dict[str, Any], exists: bool
    ) -> None:
        flow_id = (await create(wire, "validated"))["id"] if exists else str(uuid.uuid4())
        body = {"id": flow_id, **extra}
        reply = await wire("cmd.update", body)
        assert_validation_error(reply, [error], body)
        if exists:
            read = (await wire("query.read", {"id": flow_id})).json
            assert read["tags"] == []
            assert read["name"] == "validated"

    async def test_a_missing_or_malformed_id_is_a_validation_error_at_body_id(
        self, wire: Wire
    ) -> None:
        for body in ({"tags": ["x"]}, {"id": "not-a-uuid", "tags": ["x"]}):
            reply = await wire("cmd.update", body)
            assert_error(reply, 422)
            detail = reply.json["exception_detail"]
            assert [error["loc"] for error in detail] == [["body", "id"]]
            assert reply.json["request_body"] == body


class TestDelete:
    async def test_delete_then_404_then_the_name_is_free_again(self, wire: Wire) -> None:
        flow = await create(wire, "alpha", tags=["db"])
        reply = await wire("cmd.delete", {"id": flow["id"]})
        assert_success(reply, 204)
        assert reply.data == b""
        assert_position(reply)

        read = await wire("query.read", {"id": flow["id"]})
        assert_error(read, 404)
        assert read.data == NOT_FOUND
        by_name = await wire("query.read_by_name", {"name": "alpha"})
        assert_error(by_name, 404)

        again = await wire("cmd.delete", {"id": flow["id"]})
        assert_error(again, 404)
        assert again.data == NOT_FOUND

        reborn = await wire("cmd.create", {"name": "alpha"})
        assert_success(reborn, 201)
        assert reborn.json["id"] != flow["id"]
        assert reborn.json["tags"] == []
        assert (await wire("query.read_by_name", {"name": "alpha"})).data == reborn.data

    async def test_an_unknown_id_is_404(self, wire: Wire) -> None:
        reply = await wire("cmd.delete", {"id": str(uuid.uuid4())})
        assert_error(reply, 404)
        assert reply.data == NOT_FOUND

    async def test_a_flow_updated_before_deletion_frees_its_name(self, wire: Wire) -> None:
        flow = await create(wire, "updated-then-deleted")
        assert_success(await wire("cmd.update", {"id": flow["id"], "tags": ["t"]}), 204)
        assert_success(await wire("cmd.delete", {"id": flow["id"]}), 204)
        reborn = await wire("cmd.create", {"name": "updated-then-deleted"})
        assert_success(reborn, 201)
        assert reborn.json["id"] != flow["id"]


class TestBulkDelete:
    async def test_without_a_filter_it_deletes_the_first_50_flows_by_name(
        self, wire: Wire, client: FlowsClient
    ) -> None:
        names = [f"flow-{i:02d}" for i in range(50)] + ["Zulu", "zulu", "Alpha", "~last"]
        shuffled = random.sample(names, len(names))
        created = await asyncio.gather(*(create(wire, name) for name in shuffled))
        ids = {flow["name"]: flow["id"] for flow in created}
        ordered = sorted(names)  # code-point order, as SQLite's BINARY collation sorts

        reply = await wire("cmd.bulk_delete")
        assert_success(reply, 200)
        assert_position(reply)
        assert reply.json == {"deleted": [ids[name] for name in ordered[:50]]}
        assert list(reply.json) == ["deleted"]

        remaining = await wire("query.filter")
        assert [flow["name"] for flow in remaining.json] == ordered[50:]

    async def test_the_deleted_flows_are_gone(self, wire: Wire) -> None:
        flows = [await create(wire, f"f{i}") for i in range(3)]
        reply = await wire(
            "cmd.bulk_delete", {"flows": {"id": {"any_": [flows[0]["id"], flows[1]["id"]]}}}
        )
        assert_success(reply, 200)
        assert reply.json == {"deleted": [flows[0]["id"], flows[1]["id"]]}
        for flow in flows[:2]:
            assert_error(await wire("query.read", {"id": flow["id"]}), 404)
        assert_success(await wire("query.read", {"id": flows[2]["id"]}), 200)
        # and their names are free again
        assert_success(await wire("cmd.create", {"name": "f0"}), 201)

    async def test_deleted_ids_come_in_name_order(self, wire: Wire) -> None:
        flows = {name: await create(wire, name) for name in ["c", "a", "b"]}
        ids = [flows[name]["id"] for name in ["b", "c", "a"]]
        reply = await wire("cmd.bulk_delete", {"flows": {"id": {"any_": ids}}})
        assert reply.json == {"deleted": [flows[name]["id"] for name in ["a", "b", "c"]]}

    async def test_limit_bounds_how_many_are_deleted(self, wire: Wire) -> None:
        flows = [await create(wire, f"limited-{i}") for i in range(4)]
        reply = await wire(
            "cmd.bulk_delete",
            {"flows": {"id": {"any_": [flow["id"] for flow in flows]}}, "limit": 2},
        )
        assert_success(reply, 200)
        assert reply.json == {"deleted": [flows[0]["id"], flows[1]["id"]]}
        count = await wire("query.count")
        assert count.data == b"2"

    async def test_limit_1_deletes_exactly_the_first_by_name(self, wire: Wire) -> None:
        for name in ["m", "b", "z"]:
            await create(wire, name)
        reply = await wire("cmd.bulk_delete", {"limit": 1})
        assert_success(reply, 200)
        remaining = await wire("query.filter")
        assert [flow["name"] for flow in remaining.json] == ["m", "z"]
        assert len(reply.json["deleted"]) == 1

    async def test_a_name_filter_selects_what_is_deleted(self, wire: Wire) -> None:
        keep = await create(wire, "keep-me")
        gone = await create(wire, "drop-me")
        reply = await wire("cmd.bulk_delete", {"flows": {"name": {"like_": "DROP"}}})
        assert reply.json == {"deleted": [gone["id"]]}
        assert_success(await wire("query.read", {"id": keep["id"]}), 200)

    async def test_unknown_ids_delete_nothing(self, wire: Wire) -> None:
        flow = await create(wire, "survivor")
        unknown = [str(uuid.uuid4()) for _ in range(3)]
        reply = await wire("cmd.bulk_delete", {"flows": {"id": {"any_": unknown}}})
        assert_success(reply, 200)
        assert reply.data == b'{"deleted":[]}'
        assert_position(reply)
        mixed = await wire("cmd.bulk_delete", {"flows": {"id": {"any_": [flow["id"], *unknown]}}})
        assert mixed.json == {"deleted": [flow["id"]]}

    async def test_an_empty_log_deletes_nothing(self, wire: Wire) -> None:
        reply = await wire("cmd.bulk_delete", {})
        assert_success(reply, 200)
        assert reply.data == b'{"deleted":[]}'

    @pytest.mark.parametrize(
        ("limit", "error"),
        [
            (51, {"type": "less_than_equal", "loc": ["body", "limit"],
                  "msg": "Input should be less than or equal to 50", "input": 51,
                  "ctx": {"le": 50}}),
            (0, {"type": "greater_than_equal", "loc": ["body", "limit"],
                 "msg": "Input should be greater than or equal to 1", "input": 0,
                 "ctx": {"ge": 1}}),
            (-1, {"type": "greater_than_equal", "loc": ["body", "limit"],
                  "msg": "Input should be greater than or equal to 1", "input": -1,
                  "ctx": {"ge": 1}}),
            (1.5, {"type": "int_from_float", "loc": ["body", "limit"],
                   "msg": "Input should be a valid integer, got a number with a fractional part",
                   "input": 1.5}),
        ],
    )  # fmt: skip
    async def test_limit_outside_1_to_50_is_a_validation_error(
        self, wire: Wire, limit: Any, error: dict[str, Any]
    ) -> None:
        flow = await create(wire, "not-deleted")
        reply = await wire("cmd.bulk_delete", {"limit": limit})
        assert_validation_error(reply, [error], {"limit": limit})
        assert_success(await wire("query.read", {"id": flow["id"]}), 200)

    @pytest.mark.parametrize("limit", [1, 50])
    async def test_limit_1_and_50_are_accepted(self, wire: Wire, limit: int) -> None:
        assert_success(await wire("cmd.bulk_delete", {"limit": limit}), 200)

    async def test_an_unknown_filter_key_is_a_validation_error(self, wire: Wire) -> None:
        body = {"flows": {"bogus": 1}}
        reply = await wire("cmd.bulk_delete", body)
        error = {
            "type": "extra_forbidden",
            "loc": ["body", "flows", "bogus"],
            "msg": "Extra inputs are not permitted",
            "input": 1,
        }
        assert_validation_error(reply, [error], body)


class TestReplyHeaders:
    """Flows-Status on every reply; the error headers on every error reply and on no success;
    Flows-Position on every command reply."""

    async def test_successes_carry_no_error_headers_and_commands_carry_a_position(
        self, wire: Wire
    ) -> None:
        created = await wire("cmd.create", {"name": "h"})
        flow_id = created.json["id"]
        replies = {
            "create 201": (created, 201),
            "create 200": (await wire("cmd.create", {"name": "h"}), 200),
            "update": (await wire("cmd.update", {"id": flow_id, "tags": ["t"]}), 204),
            "bulk_delete none": (
                await wire("cmd.bulk_delete", {"flows": {"name": {"any_": []}}}),
                200,
            ),
        }
        queries = {
            "read": (await wire("query.read", {"id": flow_id}), 200),
            "read_by_name": (await wire("query.read_by_name", {"name": "h"}), 200),
            "filter": (await wire("query.filter"), 200),
            "count": (await wire("query.count"), 200),
            "paginate": (await wire("query.paginate"), 200),
            "history": (await wire("audit.history", {"id": flow_id}), 200),
            "events": (await wire("audit.events"), 200),
        }
        replies["delete"] = (await wire("cmd.delete", {"id": flow_id}), 204)
        second = await create(wire, "h2")
        replies["bulk_delete some"] = (await wire("cmd.bulk_delete", {}), 200)
        assert replies["bulk_delete some"][0].json == {"deleted": [second["id"]]}

        positions = []
        for what, (reply, status) in replies.items():
            assert_success(reply, status)
            positions.append((what, assert_position(reply)))
        for _, (reply, status) in queries.items():
            assert_success(reply, status)
        # Each command that appended answers a position past the one before it.
        appended = [p for what, p in positions if what not in {"create 200", "bulk_delete none"}]
        assert appended == sorted(appended)
        assert len(set(appended)) == len(appended)

    @pytest.mark.parametrize(
        ("operation", "body", "status"),
        [
            ("cmd.create", {"name": "a/b"}, 422),
            ("cmd.create", b"{", 422),
            ("cmd.update", {"id": "00000000-0000-4000-8000-000000000000"}, 404),
            ("cmd.update", {"id": "00000000-0000-4000-8000-000000000000", "name": "x"}, 422),
            ("cmd.delete", {"id": "00000000-0000-4000-8000-000000000000"}, 404),
            ("cmd.delete", {}, 422),
            ("cmd.bulk_delete", {"limit": 51}, 422),
            ("query.read", {"id": "00000000-0000-4000-8000-000000000000"}, 404),
            ("query.read", {}, 422),
            ("query.read_by_name", {"name": "nope"}, 404),
            ("query.read_by_name", {"name": 5}, 422),
            ("query.filter", {"limit": 201}, 422),
            ("query.filter", {"sort": "NAME"}, 422),
            ("query.count", {"flows": {"tags": {"any_": ["db"]}}}, 422),
            ("query.paginate", {"page": 0}, 422),
            ("query.paginate", {"limit": -1}, 422),
            ("audit.history", {}, 422),
            ("audit.events", {"limit": 0}, 422),
        ],
    )
    async def test_every_error_reply_carries_the_service_error_headers(
        self, wire: Wire, operation: str, body: Any, status: int
    ) -> None:
        reply = await wire(operation, body)
        assert_error(reply, status)
        assert reply.headers["Flows-Status"] == str(status)

    @pytest.mark.parametrize(
        ("operation", "body", "status"),
        [
            ("cmd.create", {"name": "a/b"}, 422),
            ("cmd.update", {"id": "00000000-0000-4000-8000-000000000000"}, 404),
            ("cmd.update", {"id": "00000000-0000-4000-8000-000000000000", "tags": None}, 422),
            ("cmd.delete", {"id": "00000000-0000-4000-8000-000000000000"}, 404),
            ("cmd.delete", {"id": "nope"}, 422),
            ("cmd.bulk_delete", {"limit": 0}, 422),
        ],
    )
    async def test_command_error_replies_carry_a_position_too(
        self,
        wire: Wire,
        log_end: Callable[[], Awaitable[int]],
        operation: str,
        body: Any,
        status: int,
    ) -> None:
        """CONTRACT.md: `Flows-Position` is "on every command reply", refusals included; a
        refusal appended nothing, so its position is one the log already has."""
        await create(wire, "something-in-the-log")
        reply = await wire(operation, body)
        assert_error(reply, status)
        assert assert_position(reply) <= await log_end()
