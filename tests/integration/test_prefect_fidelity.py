"""Issue 9 on the wire: the classes of answers that differed from Prefect 3.9.1's.

Every expected value is Prefect's real answer (status, error type, loc, msg, ctx, request_body),
byte for byte where Prefect answers; where Prefect itself fails (500), the service's own sane
answer, as the README's "Where this differs from Prefect over HTTP" lists it. Runs against a
real nats-server, on each read-model backend.
"""

from __future__ import annotations

from typing import Any

import pytest

from events.contract.bodies import MAX_DEPTH
from events.contract.filters import LIKE_MAX_LENGTH
from services.settings import Settings
from tests import backends
from tests.integration.conftest import Wire
from tests.integration.wire import (
    WireReply,
    assert_error,
    assert_success,
    assert_validation_error,
)

PARSE_ERROR = b'{"detail":"There was an error parsing the body"}'
ATTRIBUTES_MSG = "Input should be a valid dictionary or object to extract fields from"
QUERIES = ("query.filter", "query.count", "query.paginate")
GROUPS = ("flows", "flow_runs", "task_runs", "deployments", "work_pools")


def attributes_error(loc: list[Any], value: Any) -> dict[str, Any]:
    return {"type": "model_attributes_type", "loc": ["body", *loc], "msg": ATTRIBUTES_MSG,
            "input": value}  # fmt: skip


def assert_parse_error(reply: WireReply) -> None:
    """FastAPI's plain 400 for a body Python's parser cannot read."""
    assert_error(reply, 400)
    assert reply.data == PARSE_ERROR


class TestNonObjectFilters:
    @pytest.mark.parametrize("group", GROUPS)
    async def test_filter_count_and_paginate(self, wire: Wire, group: str) -> None:
        # Prefect 3.9.1: `{"flows": true}` -> model_attributes_type at ["body", "flows"].
        for operation in QUERIES:
            reply = await wire(operation, {group: True})
            assert_validation_error(reply, [attributes_error([group], True)], {group: True})

    async def test_bulk_delete_and_nested(self, wire: Wire) -> None:
        reply = await wire("cmd.bulk_delete", {"flows": 5})
        assert_validation_error(reply, [attributes_error(["flows"], 5)], {"flows": 5})
        nested = {"flows": {"name": True}}
        reply = await wire("query.filter", nested)
        assert_validation_error(reply, [attributes_error(["flows", "name"], True)], nested)


class TestIntegersBeyond64Bits:
    async def test_a_label_is_stored_and_read_back_exactly(self, wire: Wire) -> None:
        # Prefect 3.9.1: 201, `"labels":{"n":9223372036854775808}`, and so on every read.
        body = {"name": "big-label", "labels": {"n": 2**63, "m": -(2**64) - 1}}
        created = await wire("cmd.create", body)
        assert_success(created, 201)
        assert b'"labels":{"n":9223372036854775808,"m":-18446744073709551617}' in created.data
        flow_id = created.json["id"]
        read = await wire("query.read", {"id": flow_id})
        assert read.data == created.data
        by_name = await wire("query.read_by_name", {"name": "big-label"})
        assert by_name.data == created.data
        history = await wire("audit.history", {"id": flow_id})
        assert history.json[0]["data"]["labels"] == body["labels"]
        again = await wire("cmd.create", {"name": "big-label"})
        assert_success(again, 200)
        assert again.data == created.data

    async def test_limits(self, wire: Wire) -> None:
        # Prefect 3.9.1: its own LimitBody range error, and bulk_delete's validation echo.
        for operation in ("query.filter", "query.paginate"):
            reply = await wire(operation, b'{"limit": 9223372036854775808}')
            assert_error(reply, 422)
            assert reply.data == b'{"detail":"Invalid limit: must be less than or equal to 200."}'
        reply = await wire("cmd.bulk_delete", b'{"limit": 9223372036854775808}')
        error = {"type": "less_than_equal", "loc": ["body", "limit"],
                 "msg": "Input should be less than or equal to 50", "input": 2**63,
                 "ctx": {"le": 50}}  # fmt: skip
        assert_validation_error(reply, [error], {"limit": 2**63})

    async def test_offset_and_page_past_64_bits_are_an_empty_page(self, wire: Wire) -> None:
        # Prefect fails with a 500 on these; the service answers the page past the end.
        await wire("cmd.create", {"name": "one"})
        reply = await wire("query.filter", {"offset": 2**63})
        assert_success(reply, 200)
        assert reply.json == []
        reply = await wire("query.paginate", {"page": 2**64, "limit": 3})
        assert_success(reply, 200)
        assert reply.json == {"results": [], "count": 1, "limit": 3, "pages": 1, "page": 2**64}


def deep_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


class TestNesting:
    async def test_up_to_the_limit_a_body_is_validated_as_prefect_does(self, wire: Wire) -> None:
        # Prefect 3.9.1: string_type at [..., "any_", 0], the deep input echoed.
        inner = deep_list(MAX_DEPTH - 4)
        reply = await wire("query.filter", b'{"flows": {"name": {"any_": [%s]}}}' % inner)
        assert_error(reply, 422)
        (error,) = reply.json["exception_detail"]
        assert (error["type"], error["loc"], error["msg"]) == (
            "string_type",
            ["body", "flows", "name", "any_", 0],
            "Input should be a valid string",
        )
        assert reply.data.endswith(b'"request_body":{"flows":{"name":{"any_":[%s]}}}}' % inner)

    @pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
    async def test_deeper_is_the_parsers_400(self, wire: Wire, depth: int) -> None:
        # Prefect answers this from ~950 levels on; the service from MAX_DEPTH + 1 (README).
        for operation in ("cmd.create", "query.filter"):
            assert_parse_error(await wire(operation, deep_list(depth)))


class TestPayloadText:
    @pytest.mark.parametrize(("payload", "position"), [(b"  ", 2), (b"\n", 1)])
    async def test_whitespace_only_is_malformed_json(
        self, wire: Wire, payload: bytes, position: int
    ) -> None:
        # Prefect 3.9.1: json_invalid at ["body", 2] for "  "; only an empty payload is {}.
        error = {"type": "json_invalid", "loc": ["body", position], "msg": "JSON decode error",
                 "input": {}, "ctx": {"error": "Expecting value"}}  # fmt: skip
        for operation in ("cmd.create", "query.count"):
            assert_validation_error(await wire(operation, payload), [error], payload.decode())

    @pytest.mark.parametrize(
        ("name", "encode"),
        [
            ("bom-flow", lambda text: b"\xef\xbb\xbf" + text.encode()),
            ("u16-flow", lambda text: text.encode("utf-16")),
            ("u32-flow", lambda text: text.encode("utf-32")),
            ("u16le-flow", lambda text: text.encode("utf-16-le")),
        ],
    )
    async def test_bom_utf16_and_utf32_are_read(self, wire: Wire, name: str, encode: Any) -> None:
        # Prefect 3.9.1: 201 for each.
        created = await wire("cmd.create", encode(f'{{"name": "{name}", "tags": ["é"]}}'))
        assert_success(created, 201)
        assert (created.json["name"], created.json["tags"]) == (name, ["é"])

    async def test_invalid_utf8_is_the_parsers_400(self, wire: Wire) -> None:
        # Prefect 3.9.1: 400 {"detail": "There was an error parsing the body"}.
        assert_parse_error(await wire("cmd.create", b'{"name": "bad\xff"}'))
        assert_parse_error(await wire("query.filter", b'{"flows": {"name": {"like_": "\xc3"}}}'))

    @pytest.mark.parametrize("payload", [b'{"name": "sur\\ud800"}', b'{"name": "sur\xed\xa0\x80"}'])
    async def test_a_lone_surrogate_is_the_parsers_400(self, wire: Wire, payload: bytes) -> None:
        # Prefect fails with a 500; no text column or reply can carry half a UTF-16 pair.
        assert_parse_error(await wire("cmd.create", payload))


class TestNonFiniteLabels:
    @pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
    async def test_are_refused(self, wire: Wire, settings: Settings, number: bytes) -> None:
        # Prefect accepts them, then fails with a 500; they used to be stored as null.
        reply = await wire("cmd.create", b'{"name": "nan", "labels": {"n": %s}}' % number)
        assert_error(reply, 422)
        errors = reply.json["exception_detail"]
        assert [(e["type"], e["loc"][-1]) for e in errors] == [
            ("bool_type", "bool"),
            ("int_type", "int"),
            ("finite_number", "float"),
            ("string_type", "str"),
        ]
        # JSON has no NaN: the echo shows null.
        assert reply.json["request_body"] == {"name": "nan", "labels": {"n": None}}
        missing = await wire("query.read_by_name", {"name": "nan"})
        assert_error(missing, 404)


class TestDatetimeCriteria:
    @pytest.mark.parametrize(
        ("value", "error"),
        [
            ("not a date", {"msg": "Value error, Unable to parse string [not a date]",
                            "ctx": {"error": {}}}),
            ([], {"msg": "value is not a valid datetime"}),
            (True, {"msg": "value is not a valid datetime"}),
        ],
    )  # fmt: skip
    async def test_prefects_value_errors(
        self, wire: Wire, value: Any, error: dict[str, Any]
    ) -> None:
        # Prefect 3.9.1: `{"flow_runs": {"start_time": {"before_": "not a date"}}}`.
        body = {"flow_runs": {"start_time": {"before_": value}}}
        expected = {"type": "value_error", "loc": ["body", "flow_runs", "start_time", "before_"],
                    "msg": error["msg"], "input": value, **({"ctx": error["ctx"]} if "ctx" in error else {})}  # fmt: skip
        assert_validation_error(await wire("query.filter", body), [expected], body)


def on_postgres(service: Settings) -> bool:
    return service.resolved_database_url.startswith("postgresql")


class TestNulInNames:
    # PostgreSQL's text cannot hold U+0000 (README): this one is SQLite's; the next PostgreSQL's.
    @backends.only(backends.SQLITE)
    async def test_a_name_is_found_exactly(self, wire: Wire, service: Settings) -> None:
        # Prefect 3.9.1 (SQLite): name any_ ["nul\u0000byte"] finds the flow named so, and
        # read_by_name agrees.
        created = await wire("cmd.create", {"name": "nul\x00byte", "tags": ["x\x00y"]})
        assert_success(created, 201)
        await wire("cmd.create", {"name": "tagged-x", "tags": ["x"]})
        found = await wire("query.filter", {"flows": {"name": {"any_": ["nul\x00byte"]}}})
        assert [f["id"] for f in found.json] == [created.json["id"]]
        by_name = await wire("query.read_by_name", {"name": "nul\x00byte"})
        assert by_name.data == created.data
        # Tags match exactly (Prefect's SQLite would also match "tagged-x": README).
        tagged = await wire("query.filter", {"flows": {"tags": {"all_": ["x\x00y"]}}})
        assert [f["name"] for f in tagged.json] == ["nul\x00byte"]

    @backends.only(backends.POSTGRESQL)
    async def test_postgres_refuses_what_it_cannot_store(
        self, wire: Wire, service: Settings
    ) -> None:
        # Prefect on PostgreSQL fails too; the service refuses it instead of writing an event
        # its read model could never apply (which would stall every later query).
        assert on_postgres(service)
        body = {"name": "nul\x00byte", "tags": ["ok", "x\x00y"]}
        reply = await wire("cmd.create", body)
        message = "Value error, the PostgreSQL read model cannot store U+0000 in text"
        errors = [
            {"type": "value_error", "loc": ["body", *loc], "msg": message, "input": text,
             "ctx": {"error": {}}}
            for loc, text in ((["name"], "nul\x00byte"), (["tags", 1], "x\x00y"))
        ]  # fmt: skip
        assert_validation_error(reply, errors, body)
        created = await wire("cmd.create", {"name": "fine"})
        update = {"id": created.json["id"], "tags": ["x\x00y"]}
        tag_error = {**errors[1], "loc": ["body", "tags", 0]}
        assert_validation_error(await wire("cmd.update", update), [tag_error], update)
        after = await wire("query.count", {}, {"Flows-Min-Position": str(created.position)})
        assert (after.status, after.json) == (200, 1)


class TestLongLikePatterns:
    """SQLite refuses LIKE patterns above 50,000 bytes (Prefect on SQLite answers 500): past
    12,000 characters a `like_` is a 422 on every backend; up to it, any text is answered."""

    async def test_up_to_the_limit_any_text_is_answered(self, wire: Wire) -> None:
        widest = "\U0001f600" * LIKE_MAX_LENGTH  # four bytes each in UTF-8
        for operation in QUERIES:
            reply = await wire(operation, {"flows": {"name": {"like_": widest}}})
            assert_success(reply, 200)

    async def test_past_it_a_like_is_a_422(self, wire: Wire) -> None:
        pattern = "x" * (LIKE_MAX_LENGTH + 1)
        body = {"flow_runs": {"name": {"like_": pattern}}}
        reply = await wire("query.count", body)
        assert_validation_error(
            reply,
            [
                {
                    "type": "string_too_long",
                    "loc": ["body", "flow_runs", "name", "like_"],
                    "msg": f"String should have at most {LIKE_MAX_LENGTH} characters",
                    "input": pattern,
                    "ctx": {"max_length": LIKE_MAX_LENGTH},
                }
            ],
            body,
        )
