"""Command bodies are validated exactly as Prefect 3.9.1 validates FlowCreate / FlowUpdate.

Fact numbers (A4, G92, ...) and the recorded 422 bodies are those of PREFECT_FLOWS_API.md (§5, §6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from events.contract.bodies import MAX_DEPTH, load_json_body
from events.contract.commands import (
    CreateFlow,
    DeleteFlow,
    DeleteFlows,
    UpdateFlow,
    parse_create,
    parse_delete,
    parse_update,
)
from events.contract.errors import InvalidRequest, UnparsableBody
from events.contract.queries import parse_filter_request
from events.contract.replies import error_reply

FLOW_ID = "16f3851d-39da-4c5a-9d99-c10251805eb4"
PATTERN = "^[^/%&><]+$"
PATTERN_MSG = "String should match pattern '^[^/%&><]+$'"
ATTRIBUTES_MSG = "Input should be a valid dictionary or object to extract fields from"
NO_BODY = {
    "exception_message": "Invalid request received.",
    "exception_detail": [
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
    ],
    "request_body": None,
}

Parser = Callable[[Any], BaseModel]
IdParser = Callable[[Any], UpdateFlow | DeleteFlow]


def rejection(parse: Parser, data: Any) -> Any:
    """The 422 body a parser answers for `data` (failing the test if it accepts it)."""
    with pytest.raises(InvalidRequest) as caught:
        parse(data)
    assert caught.value.status == 422
    return caught.value.body()


def details(parse: Parser, data: Any) -> list[dict[str, Any]]:
    body = rejection(parse, data)
    assert body["exception_message"] == "Invalid request received."
    assert body["request_body"] == data
    detail: list[dict[str, Any]] = body["exception_detail"]
    return detail


def pattern_error(name: str) -> dict[str, Any]:
    return {
        "type": "string_pattern_mismatch",
        "loc": ["body", "name"],
        "msg": PATTERN_MSG,
        "input": name,
        "ctx": {"pattern": PATTERN},
    }


def type_error(kind: str, loc: list[Any], value: Any) -> dict[str, Any]:
    messages = {
        "string_type": "Input should be a valid string",
        "list_type": "Input should be a valid list",
        "bool_type": "Input should be a valid boolean",
        "int_type": "Input should be a valid integer",
        "float_type": "Input should be a valid number",
    }
    return {"type": kind, "loc": loc, "msg": messages[kind], "input": value}


def extra_error(key: str, value: Any) -> dict[str, Any]:
    return {
        "type": "extra_forbidden",
        "loc": ["body", key],
        "msg": "Extra inputs are not permitted",
        "input": value,
    }


class TestFlowNames:
    @pytest.mark.parametrize(
        "name",
        [
            # A4
            "my flow",
            "my:flow",
            "my\\flow",
            "my👍flow",
            "my|flow",
            # G92
            "my-object",
            "my object",
            "my:object",
            "my;object",
            "my\\object",
            "my|object",
            "my⁉️object",
            # §2.2: everything but / % & > < is kept verbatim, no trimming, no maximum length
            "   ",
            "'",
            '"quoted"',
            "MY_FLOW_underscore",
            "tab\there",
            "new\nline",
            "trailing   ",
            "  leading",
            "x" * 2000,
        ],
    )
    def test_accepted_verbatim(self, name: str) -> None:
        assert parse_create({"name": name}).name == name

    @pytest.mark.parametrize(
        "name", ["my/flow", "my%flow", "my&flow", "my>flow", "my<flow", "/", "", "ok/"]
    )
    def test_banned_characters_and_empty_fail_the_pattern(self, name: str) -> None:
        # A5, G93, §2.2: the empty name fails the same pattern (min length 1 comes from `+`).
        assert details(parse_create, {"name": name}) == [pattern_error(name)]

    def test_recorded_invalid_name_body(self) -> None:
        assert rejection(parse_create, {"name": "my/flow"}) == {
            "exception_message": "Invalid request received.",
            "exception_detail": [
                {
                    "type": "string_pattern_mismatch",
                    "loc": ["body", "name"],
                    "msg": "String should match pattern '^[^/%&><]+$'",
                    "input": "my/flow",
                    "ctx": {"pattern": "^[^/%&><]+$"},
                }
            ],
            "request_body": {"name": "my/flow"},
        }

    @pytest.mark.parametrize("value", [123, 1.5, True, None, ["x"], {"a": "b"}])
    def test_must_be_a_string_without_coercion(self, value: Any) -> None:
        assert details(parse_create, {"name": value}) == [
            type_error("string_type", ["body", "name"], value)
        ]

    def test_recorded_missing_name_body(self) -> None:
        assert rejection(parse_create, {"tags": []}) == {
            "exception_message": "Invalid request received.",
            "exception_detail": [
                {
                    "type": "missing",
                    "loc": ["body", "name"],
                    "msg": "Field required",
                    "input": {"tags": []},
                }
            ],
            "request_body": {"tags": []},
        }


class TestCreateTags:
    def test_default_is_empty(self) -> None:
        assert parse_create({"name": "Minimal"}).tags == []

    def test_order_and_duplicates_kept(self) -> None:
        assert parse_create({"name": "x", "tags": ["b", "a", "b"]}).tags == ["b", "a", "b"]

    @pytest.mark.parametrize("value", [None, "a", 1, {"a": 1}])
    def test_not_a_list(self, value: Any) -> None:
        assert details(parse_create, {"name": "x", "tags": value}) == [
            type_error("list_type", ["body", "tags"], value)
        ]

    @pytest.mark.parametrize("tag", [1, 1.5, True, None, ["a"]])
    def test_tags_are_strings_without_coercion(self, tag: Any) -> None:
        assert details(parse_create, {"name": "x", "tags": ["ok", tag]}) == [
            type_error("string_type", ["body", "tags", 1], tag)
        ]


class TestCreateLabels:
    def test_default_is_empty(self) -> None:
        assert parse_create({"name": "Minimal"}).labels == {}

    def test_null_is_kept_as_null(self) -> None:
        assert parse_create({"name": "labels-null", "labels": None}).labels is None

    def test_recorded_create_example(self) -> None:
        command = parse_create(
            {"name": "my-flow", "tags": ["a", "b"], "labels": {"env": "dev", "n": 1}}
        )
        assert command == CreateFlow(name="my-flow", tags=["a", "b"], labels={"env": "dev", "n": 1})

    @pytest.mark.parametrize(
        ("value", "kind"),
        [
            (True, bool),
            (False, bool),
            (3, int),
            (0, int),
            (1.5, float),
            (1.0, float),
            ("x", str),
            ("", str),
        ],
    )
    def test_strict_value_types(self, value: Any, kind: type) -> None:
        labels = parse_create({"name": "x", "labels": {"k": value}}).labels
        assert labels is not None
        assert type(labels["k"]) is kind
        assert labels["k"] == value

    @pytest.mark.parametrize("value", [{"b": 1}, [1], None])
    def test_other_values_give_one_error_per_union_member(self, value: Any) -> None:
        loc = ["body", "labels", "a"]
        assert details(parse_create, {"name": "x-labels", "labels": {"a": value}}) == [
            type_error("bool_type", [*loc, "bool"], value),
            type_error("int_type", [*loc, "int"], value),
            type_error("float_type", [*loc, "float"], value),
            type_error("string_type", [*loc, "str"], value),
        ]

    @pytest.mark.parametrize("value", [2**63, 2**64, -(2**63) - 1, 10**30])
    def test_integers_of_any_size(self, value: int) -> None:
        # Prefect 3.9.1: `"labels": {"n": 9223372036854775808}` -> 201, read back exactly.
        raw = b'{"name": "a", "labels": {"n": %d}}' % value
        assert parse_create(load_json_body(raw)).labels == {"n": value}

    @pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
    def test_non_finite_numbers_are_refused(self, raw: bytes) -> None:
        # Prefect accepts them and fails with a 500; no event or reply could carry them.
        body = load_json_body(b'{"name": "x", "labels": {"n": %s}}' % raw)
        value = body["labels"]["n"]
        loc = ["body", "labels", "n"]
        assert details(parse_create, body) == [
            type_error("bool_type", [*loc, "bool"], value),
            type_error("int_type", [*loc, "int"], value),
            {
                "type": "finite_number",
                "loc": [*loc, "float"],
                "msg": "Input should be a finite number",
                "input": value,
            },
            type_error("string_type", [*loc, "str"], value),
        ]

    @pytest.mark.parametrize("value", [[], "a", 1])
    def test_labels_must_be_an_object(self, value: Any) -> None:
        [error] = details(parse_create, {"name": "x", "labels": value})
        assert error == {
            "type": "dict_type",
            "loc": ["body", "labels"],
            "msg": "Input should be a valid dictionary",
            "input": value,
        }


class TestCreateExtraKeys:
    def test_recorded_extra_field_body(self) -> None:
        assert rejection(parse_create, {"name": "x-extra", "foo": 1}) == {
            "exception_message": "Invalid request received.",
            "exception_detail": [extra_error("foo", 1)],
            "request_body": {"name": "x-extra", "foo": 1},
        }

    @pytest.mark.parametrize(
        ("key", "value"),
        [("id", FLOW_ID), ("created", "2020-01-01T00:00:00Z"), ("updated", None)],
    )
    def test_server_fields_cannot_be_supplied(self, key: str, value: Any) -> None:
        assert details(parse_create, {"name": "x", key: value}) == [extra_error(key, value)]

    def test_all_errors_reported_together_fields_first(self) -> None:
        data = {"foo": 1, "name": 123, "tags": [1]}
        assert details(parse_create, data) == [
            type_error("string_type", ["body", "name"], 123),
            type_error("string_type", ["body", "tags", 0], 1),
            extra_error("foo", 1),
        ]


class TestUpdate:
    @pytest.mark.parametrize(
        ("body", "tags"),
        [
            ({"tags": ["TB12"]}, ["TB12"]),
            ({}, None),  # §2.5: omitted means "leave tags alone"
            ({"tags": []}, []),  # ... while [] clears them
            ({"tags": ["a", "a"]}, ["a", "a"]),
        ],
    )
    def test_tags(self, body: dict[str, Any], tags: list[str] | None) -> None:
        command = parse_update({"id": FLOW_ID, **body})
        assert command.id == FLOW_ID
        assert command.tags == tags
        assert command == UpdateFlow.model_validate({"id": FLOW_ID, **body})

    def test_explicit_null_tags_is_rejected(self) -> None:
        data = {"id": FLOW_ID, "tags": None}
        assert details(parse_update, data) == [type_error("list_type", ["body", "tags"], None)]

    def test_null_tags_are_rejected_in_code_too(self) -> None:
        # One rule for the wire and for code: "leave tags alone" is spelt by omitting them.
        assert UpdateFlow(id=FLOW_ID).tags is None
        with pytest.raises(ValidationError):
            UpdateFlow(id=FLOW_ID, tags=None)

    @pytest.mark.parametrize("value", ["a", 1, {"a": 1}])
    def test_tags_not_a_list(self, value: Any) -> None:
        data = {"id": FLOW_ID, "tags": value}
        assert details(parse_update, data) == [type_error("list_type", ["body", "tags"], value)]

    def test_tags_are_strings(self) -> None:
        data = {"id": FLOW_ID, "tags": [1]}
        assert details(parse_update, data) == [type_error("string_type", ["body", "tags", 0], 1)]

    @pytest.mark.parametrize(
        ("key", "value"), [("name", "renamed"), ("labels", {"a": "b"}), ("created", None)]
    )
    def test_only_tags_are_updatable(self, key: str, value: Any) -> None:
        # §6: PATCH {"name": "renamed"} and {"labels": {...}} -> extra_forbidden.
        assert details(parse_update, {"id": FLOW_ID, key: value}) == [extra_error(key, value)]

    def test_bad_body_is_rejected_whatever_the_id(self) -> None:
        # §3.6: validation comes before the lookup, so nothing about the id can turn this into 404.
        unknown = "de25db6a-9452-4534-9e23-25c613640f05"
        assert details(parse_update, {"id": unknown, "name": "x"}) == [extra_error("name", "x")]

    def test_id_is_required(self) -> None:
        assert details(parse_update, {"tags": []}) == [
            {
                "type": "missing",
                "loc": ["body", "id"],
                "msg": "Field required",
                "input": {"tags": []},
            }
        ]


class TestDelete:
    def test_id(self) -> None:
        assert parse_delete({"id": FLOW_ID}) == DeleteFlow(id=FLOW_ID)

    def test_other_keys_are_ignored(self) -> None:
        # Prefect's DELETE takes no body, so nothing else in it can be an error.
        assert parse_delete({"id": FLOW_ID, "name": "x", "tags": None}).id == FLOW_ID

    def test_id_is_required(self) -> None:
        assert details(parse_delete, {}) == [
            {"type": "missing", "loc": ["body", "id"], "msg": "Field required", "input": {}}
        ]


class TestFlowIds:
    @pytest.mark.parametrize(
        "given",
        [
            FLOW_ID,
            FLOW_ID.upper(),
            FLOW_ID.replace("-", ""),
            FLOW_ID.replace("-", "").upper(),
            "16f3851d39da-4c5a-9d99c10251805eb4",  # Starlette: each dash is optional on its own
            "16F3851d-39Da-4C5a-9D99-C10251805eB4",
        ],
    )
    @pytest.mark.parametrize("parse", [parse_update, parse_delete])
    def test_accepted_forms_become_canonical(self, parse: IdParser, given: str) -> None:
        assert parse({"id": given}).id == FLOW_ID

    @pytest.mark.parametrize(
        "given",
        [
            "not-a-uuid",
            "",
            FLOW_ID[:-1],
            FLOW_ID + "0",
            FLOW_ID.replace("a", "g"),
            "{" + FLOW_ID + "}",
            "urn:uuid:" + FLOW_ID,
            FLOW_ID + "\n",
            " " + FLOW_ID,
            "16f3851d--39da-4c5a-9d99-c10251805eb4",
        ],
    )
    @pytest.mark.parametrize("parse", [parse_update, parse_delete])
    def test_rejected_forms(self, parse: Parser, given: str) -> None:
        reason = "expected 32 hexadecimal digits, optionally dashed as 8-4-4-4-12"
        assert details(parse, {"id": given}) == [
            {
                "type": "uuid_parsing",
                "loc": ["body", "id"],
                "msg": f"Input should be a valid UUID, {reason}",
                "input": given,
                "ctx": {"error": reason},
            }
        ]

    @pytest.mark.parametrize("value", [1, None, [FLOW_ID]])
    @pytest.mark.parametrize("parse", [parse_update, parse_delete])
    def test_id_must_be_a_string(self, parse: Parser, value: Any) -> None:
        assert details(parse, {"id": value}) == [type_error("string_type", ["body", "id"], value)]


PARSERS = [parse_create, parse_update, parse_delete]


class TestWholeBodies:
    @pytest.mark.parametrize("parse", PARSERS)
    def test_null_body_is_a_missing_body(self, parse: Parser) -> None:
        # §6 "No body": FastAPI's answer for an absent (or JSON null) required body.
        assert rejection(parse, None) == NO_BODY

    @pytest.mark.parametrize("parse", PARSERS)
    @pytest.mark.parametrize("data", [[], [{"name": "x"}], "x", "", 5, 1.5, True, False])
    def test_non_object_bodies(self, parse: Parser, data: Any) -> None:
        assert details(parse, data) == [
            {"type": "model_attributes_type", "loc": ["body"], "msg": ATTRIBUTES_MSG, "input": data}
        ]

    def test_empty_payload_means_empty_object(self) -> None:
        body = load_json_body(b"")
        assert body == {}
        assert details(parse_create, body) == [
            {"type": "missing", "loc": ["body", "name"], "msg": "Field required", "input": {}}
        ]

    def test_recorded_malformed_json_body(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            load_json_body(b'{"name": ')
        assert caught.value.body() == {
            "exception_message": "Invalid request received.",
            "exception_detail": [
                {
                    "type": "json_invalid",
                    "loc": ["body", 9],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Expecting value"},
                }
            ],
            "request_body": '{"name": ',
        }

    def test_json_null_payload_is_a_missing_body(self) -> None:
        assert rejection(parse_create, load_json_body(b"null")) == NO_BODY

    def test_raw_payload_round_trip(self) -> None:
        raw = b'{"name": "my flow", "tags": ["a"], "labels": {"on": true, "n": 3, "f": 1.5}}'
        command = parse_create(load_json_body(raw))
        assert command == CreateFlow(
            name="my flow", tags=["a"], labels={"on": True, "n": 3, "f": 1.5}
        )


def json_invalid(pos: int, error: str, text: str) -> dict[str, Any]:
    return {
        "exception_message": "Invalid request received.",
        "exception_detail": [
            {
                "type": "json_invalid",
                "loc": ["body", pos],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": error},
            }
        ],
        "request_body": text,
    }


def unparsable(raw: bytes) -> Any:
    with pytest.raises(UnparsableBody) as caught:
        load_json_body(raw)
    assert caught.value.status == 400
    return caught.value.body()


def nested_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


class TestPayloads:
    """How payload bytes become a body: Starlette's `json.loads(bytes)`, then FastAPI."""

    @pytest.mark.parametrize(("raw", "pos"), [(b"  ", 2), (b"\n", 1), (b" \t\r\n", 4)])
    def test_whitespace_only_is_malformed_json(self, raw: bytes, pos: int) -> None:
        # Prefect 3.9.1: `"  "` -> 422 json_invalid at ["body", 2]; only an empty payload is {}.
        with pytest.raises(InvalidRequest) as caught:
            load_json_body(raw)
        assert caught.value.body() == json_invalid(pos, "Expecting value", raw.decode())

    @pytest.mark.parametrize(
        "raw",
        [
            b'\xef\xbb\xbf{"name": "bom-flow"}',
            '{"name": "bom-flow"}'.encode("utf-16"),
            '{"name": "bom-flow"}'.encode("utf-32"),
            '{"name": "bom-flow"}'.encode("utf-16-le"),
            '{"name": "bom-flow"}'.encode("utf-32-be"),
        ],
    )
    def test_bom_utf16_and_utf32_bodies_are_read(self, raw: bytes) -> None:
        # Prefect 3.9.1: 201 for each, as Python's json.loads detects the encoding.
        assert parse_create(load_json_body(raw)).name == "bom-flow"

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"name": "bad\xff"}',
            b'{"name": "\xc3"}',
            b"\xff\xfe\x00",  # a UTF-16 BOM, then half a code unit
            b'{"n": ' + b"1" * 4301 + b"}",  # past Python's int digit limit
        ],
    )
    def test_text_python_cannot_decode_is_a_plain_400(self, raw: bytes) -> None:
        # Prefect 3.9.1: invalid UTF-8 -> 400 {"detail": "There was an error parsing the body"}.
        assert unparsable(raw) == {"detail": "There was an error parsing the body"}

    @pytest.mark.parametrize("raw", [b'{"name": "sur\\ud800"}', b'{"name": "sur\xed\xa0\x80"}'])
    def test_a_lone_surrogate_is_a_plain_400(self, raw: bytes) -> None:
        # Prefect fails with a 500 (no text column or JSON reply can hold it).
        assert unparsable(raw) == {"detail": "There was an error parsing the body"}

    def test_a_surrogate_pair_is_one_character(self) -> None:
        assert load_json_body(b'{"name": "\\ud83d\\ude00"}') == {"name": "\U0001f600"}

    @pytest.mark.parametrize("raw", [b"9223372036854775808", b"-9223372036854775809", b"1" * 40])
    def test_integers_orjson_would_round_are_exact(self, raw: bytes) -> None:
        assert load_json_body(b'{"n": %s}' % raw) == {"n": int(raw)}

    def test_nesting_up_to_the_limit_is_validated_as_prefect_does(self) -> None:
        # Prefect 3.9.1 validates such a body normally: string_type at [..., "any_", 0].
        inner = nested_list(MAX_DEPTH - 4)
        raw = b'{"flows": {"name": {"any_": [%s]}}}' % inner
        with pytest.raises(InvalidRequest) as caught:
            parse_filter_request(load_json_body(raw))
        (error,) = caught.value.errors
        assert (error["type"], error["loc"]) == (
            "string_type",
            ["body", "flows", "name", "any_", 0],
        )
        # The reply echoes the body: it must still be written in Prefect's shape.
        reply = error_reply(caught.value)
        assert reply.body.startswith(b'{"exception_message":"Invalid request received."')
        assert inner in reply.body

    @pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
    def test_deeper_bodies_are_a_plain_400(self, depth: int) -> None:
        # Prefect answers this 400 from ~950 levels on (its parser's stack); the service
        # from MAX_DEPTH on, so that every answer stays writable (README).
        assert unparsable(nested_list(depth)) == {"detail": "There was an error parsing the body"}

    def test_an_echo_with_integers_beyond_64_bits_is_written_exactly(self) -> None:
        body = load_json_body(b'{"name": 1, "labels": {"n": 18446744073709551616}}')
        with pytest.raises(InvalidRequest) as caught:
            parse_create(body)
        assert b'"request_body":{"name":1,"labels":{"n":18446744073709551616}}' in (
            error_reply(caught.value).body
        )


class TestCommandObjects:
    @pytest.mark.parametrize(
        ("command", "field", "value"),
        [
            (CreateFlow(name="x"), "name", "y"),
            (UpdateFlow(id=FLOW_ID), "tags", []),
            (DeleteFlow(id=FLOW_ID), "id", FLOW_ID),
            (DeleteFlows(flow_ids=(FLOW_ID,)), "flow_ids", ()),
        ],
    )
    def test_frozen(self, command: BaseModel, field: str, value: Any) -> None:
        with pytest.raises(ValidationError):
            setattr(command, field, value)

    def test_delete_flows_keeps_the_selected_ids_in_order(self) -> None:
        other = "de25db6a-9452-4534-9e23-25c613640f05"
        assert DeleteFlows(flow_ids=(other, FLOW_ID)).flow_ids == (other, FLOW_ID)
        assert DeleteFlows(flow_ids=()).flow_ids == ()
