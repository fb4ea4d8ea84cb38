"""Query request parsing fails exactly as Prefect 3.9.1's endpoints do (reference §2.8-2.12, §6)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from events.contract.errors import InvalidLimit, InvalidRequest
from events.contract.filters import FlowSort, Operator, StateType
from events.contract.queries import (
    parse_bulk_delete_request,
    parse_count_request,
    parse_filter_request,
    parse_paginate_request,
    parse_read_by_name_request,
    parse_read_request,
)

FLOW_ID = "16f3851d-39da-4c5a-9d99-c10251805eb4"
SORT_MSG = "Input should be 'CREATED_DESC', 'UPDATED_DESC', 'NAME_ASC' or 'NAME_DESC'"
STATE_TYPES = (
    "'SCHEDULED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'CRASHED', "
    "'PAUSED' or 'CANCELLING'"
)


def errors_of(parse: Any, body: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    exc = caught.value
    assert exc.status == 422
    envelope = exc.body()
    assert envelope["exception_message"] == "Invalid request received."
    assert envelope["request_body"] == body
    json.dumps(envelope)  # what goes on the wire must be plain JSON
    errors: list[dict[str, Any]] = envelope["exception_detail"]
    return errors


def missing(*loc: str) -> dict[str, Any]:
    return {"type": "missing", "loc": ["body", *loc], "msg": "Field required", "input": None}


def attributes_error(loc: list[str], value: Any) -> dict[str, Any]:
    return {
        "type": "model_attributes_type",
        "loc": ["body", *loc],
        "msg": "Input should be a valid dictionary or object to extract fields from",
        "input": value,
    }


FILTER_GROUPS = ["flows", "flow_runs", "task_runs", "deployments", "work_pools"]
# Every datetime criterion Prefect's filters have (DeploymentFilter has none).
DATETIME_CRITERIA = [
    ("flow_runs", "start_time", "before_"),
    ("flow_runs", "start_time", "after_"),
    ("flow_runs", "end_time", "before_"),
    ("flow_runs", "end_time", "after_"),
    ("flow_runs", "expected_start_time", "before_"),
    ("flow_runs", "expected_start_time", "after_"),
    ("flow_runs", "next_scheduled_start_time", "before_"),
    ("flow_runs", "next_scheduled_start_time", "after_"),
    ("task_runs", "start_time", "before_"),
    ("task_runs", "start_time", "after_"),
    ("task_runs", "end_time", "before_"),
    ("task_runs", "end_time", "after_"),
    ("task_runs", "expected_start_time", "before_"),
    ("task_runs", "expected_start_time", "after_"),
]


class TestLimit:
    def test_absent_null_and_empty_body_default_to_200(self) -> None:
        assert parse_filter_request({}).limit == 200
        assert parse_filter_request({"limit": None}).limit == 200
        assert parse_filter_request(None).limit == 200

    @pytest.mark.parametrize(
        ("limit", "detail"),
        [
            (201, "Invalid limit: must be less than or equal to 200."),
            (1000, "Invalid limit: must be less than or equal to 200."),
            (-1, "Invalid limit: must be greater than or equal to 0."),
        ],
    )
    def test_out_of_range_uses_the_plain_detail_shape(self, limit: int, detail: str) -> None:
        with pytest.raises(InvalidLimit) as caught:
            parse_filter_request({"limit": limit})
        assert caught.value.status == 422
        assert caught.value.body() == {"detail": detail}

    @pytest.mark.parametrize(
        ("limit", "detail"),
        [
            (2**63, "Invalid limit: must be less than or equal to 200."),
            (10**25, "Invalid limit: must be less than or equal to 200."),
            (-(2**63) - 1, "Invalid limit: must be greater than or equal to 0."),
        ],
    )
    def test_limits_beyond_64_bits(self, limit: int, detail: str) -> None:
        # Prefect 3.9.1 answers these with its own range errors.
        with pytest.raises(InvalidLimit) as caught:
            parse_paginate_request({"limit": limit})
        assert caught.value.body() == {"detail": detail}

    def test_zero_and_the_maximum_are_allowed(self) -> None:
        assert parse_filter_request({"limit": 0}).limit == 0
        assert parse_filter_request({"limit": 200}).limit == 200

    @pytest.mark.parametrize(("raw", "limit"), [("1", 1), (1.0, 1), ("  7 ", 7), (True, 1)])
    def test_lax_integer_coercion(self, raw: Any, limit: int) -> None:
        assert parse_filter_request({"limit": raw}).limit == limit

    def test_fractional_limit_is_a_validation_error(self) -> None:
        assert errors_of(parse_filter_request, {"limit": 1.5}) == [
            {
                "type": "int_from_float",
                "loc": ["body", "limit"],
                "msg": "Input should be a valid integer, got a number with a fractional part",
                "input": 1.5,
            }
        ]

    def test_non_numeric_limit_is_a_validation_error(self) -> None:
        assert errors_of(parse_filter_request, {"limit": "abc"}) == [
            {
                "type": "int_parsing",
                "loc": ["body", "limit"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": "abc",
            }
        ]

    def test_the_default_is_also_the_maximum_and_configurable(self) -> None:
        assert parse_filter_request({}, max_limit=50).limit == 50
        with pytest.raises(InvalidLimit) as caught:
            parse_filter_request({"limit": 51}, max_limit=50)
        assert caught.value.body() == {"detail": "Invalid limit: must be less than or equal to 50."}
        assert parse_paginate_request({}, max_limit=7).limit == 7

    def test_a_range_error_wins_over_other_fields_errors(self) -> None:
        # LimitBody is a dependency: FastAPI runs it before validating the endpoint's own params.
        with pytest.raises(InvalidLimit):
            parse_filter_request({"limit": 201, "offset": -1, "sort": "bad"})

    def test_a_type_error_is_reported_together_with_the_others_limit_first(self) -> None:
        errors = errors_of(parse_filter_request, {"sort": "bad", "offset": -1, "limit": "x"})
        assert [e["loc"] for e in errors] == [
            ["body", "limit"],
            ["body", "offset"],
            ["body", "sort"],
        ]


class TestOffsetAndSort:
    def test_negative_offset(self) -> None:
        assert errors_of(parse_filter_request, {"offset": -1}) == [
            {
                "type": "greater_than_equal",
                "loc": ["body", "offset"],
                "msg": "Input should be greater than or equal to 0",
                "input": -1,
                "ctx": {"ge": 0},
            }
        ]

    def test_offsets_and_pages_beyond_64_bits_are_taken(self) -> None:
        # Prefect fails on these (500); the service answers them (an empty page, see queries).
        assert parse_filter_request({"offset": 2**63}).offset == 2**63
        assert parse_paginate_request({"page": 2**64, "limit": 3}).offset == (2**64 - 1) * 3

    def test_offset_null_is_zero(self) -> None:
        assert parse_filter_request({"offset": None}).offset == 0
        assert parse_filter_request({"offset": "3"}).offset == 3

    @pytest.mark.parametrize("sort", ["NAME", "name_asc", "", 1])
    def test_unknown_sort(self, sort: Any) -> None:
        assert errors_of(parse_filter_request, {"sort": sort}) == [
            {
                "type": "enum",
                "loc": ["body", "sort"],
                "msg": SORT_MSG,
                "input": sort,
                "ctx": {"expected": SORT_MSG.removeprefix("Input should be ")},
            }
        ]

    @pytest.mark.parametrize("sort", list(FlowSort))
    def test_every_sort_value(self, sort: FlowSort) -> None:
        assert parse_filter_request({"sort": sort.value}).sort is sort

    def test_sort_null_or_absent_is_name_asc(self) -> None:
        assert parse_filter_request({"sort": None}).sort is FlowSort.NAME_ASC
        assert parse_filter_request({}).sort is FlowSort.NAME_ASC


class TestBodyShape:
    @pytest.mark.parametrize("body", [[], "text", 3, True, [{"limit": 1}]])
    def test_non_object_body_misses_every_field_in_signature_order(self, body: Any) -> None:
        fields = ["limit", "offset", "flows", "flow_runs", "task_runs"]
        fields += ["deployments", "work_pools", "sort"]
        assert errors_of(parse_filter_request, body) == [missing(f) for f in fields]

    def test_non_object_count_body(self) -> None:
        fields = ["flows", "flow_runs", "task_runs", "deployments", "work_pools"]
        assert errors_of(parse_count_request, []) == [missing(f) for f in fields]

    def test_non_object_paginate_body(self) -> None:
        fields = ["limit", "page", "flows", "flow_runs", "task_runs"]
        fields += ["deployments", "work_pools", "sort"]
        assert errors_of(parse_paginate_request, "x") == [missing(f) for f in fields]

    def test_non_object_bulk_delete_body(self) -> None:
        assert errors_of(parse_bulk_delete_request, []) == [missing("flows"), missing("limit")]

    @pytest.mark.parametrize("value", [True, 5, "x", [], [{}]])
    @pytest.mark.parametrize("group", FILTER_GROUPS)
    @pytest.mark.parametrize(
        "parse", [parse_filter_request, parse_count_request, parse_paginate_request]
    )
    def test_a_non_object_filter_needs_attributes(self, parse: Any, group: str, value: Any) -> None:
        # Prefect 3.9.1: `{"flows": true}` and alike, on filter, count and paginate.
        assert errors_of(parse, {group: value}) == [attributes_error([group], value)]

    def test_non_object_filters_are_all_reported(self) -> None:
        # Prefect 3.9.1, count: `{"work_pools": "x", "task_runs": []}`, in signature order.
        assert errors_of(parse_count_request, {"work_pools": "x", "task_runs": []}) == [
            attributes_error(["task_runs"], []),
            attributes_error(["work_pools"], "x"),
        ]

    def test_unknown_top_level_keys_are_ignored(self) -> None:
        request = parse_filter_request({"foo": 1, "page": "x", "flows": None})
        assert request.filters.flows is None
        assert parse_count_request({"limit": 10_000, "offset": -5}).filters.flows is None

    def test_null_filters_are_absent_and_empty_ones_present(self) -> None:
        request = parse_filter_request({"flows": {}, "flow_runs": None})
        assert request.filters.flows is not None
        assert request.filters.flow_runs is None

    def test_errors_of_several_fields_are_all_reported(self) -> None:
        body = {"flows": {"foo": 1}, "work_pools": {"bar": 2}, "offset": -1}
        assert [e["loc"] for e in errors_of(parse_filter_request, body)] == [
            ["body", "offset"],
            ["body", "flows", "foo"],
            ["body", "work_pools", "bar"],
        ]

    def test_request_objects_are_frozen(self) -> None:
        request = parse_filter_request({"flows": {"name": {"any_": ["a"]}}})
        with pytest.raises(AttributeError):
            request.limit = 3  # type: ignore[misc]
        with pytest.raises(ValueError, match="frozen"):
            request.filters.flows.operator = Operator.or_  # type: ignore[misc,union-attr]


class TestFlowFilterSchema:
    def test_tags_have_no_any(self) -> None:
        body = {"flows": {"tags": {"any_": ["db"]}}}
        assert errors_of(parse_filter_request, body) == [
            {
                "type": "extra_forbidden",
                "loc": ["body", "flows", "tags", "any_"],
                "msg": "Extra inputs are not permitted",
                "input": ["db"],
            }
        ]

    @pytest.mark.parametrize(
        ("flows", "loc"),
        [
            ({"name": {"operator": "or_"}}, ["name", "operator"]),
            ({"id": {"operator": "and_"}}, ["id", "operator"]),
            ({"tags": {"like_": "x"}}, ["tags", "like_"]),
            ({"labels": {}}, ["labels"]),
            ({"deployment": {"any_": []}}, ["deployment", "any_"]),
        ],
    )
    def test_unknown_keys_anywhere_are_forbidden(self, flows: Any, loc: list[str]) -> None:
        (error,) = errors_of(parse_filter_request, {"flows": flows})
        assert error["type"] == "extra_forbidden"
        assert error["loc"] == ["body", "flows", *loc]

    @pytest.mark.parametrize(
        "flows",
        [{"operator": "xor"}, {"tags": {"operator": "OR"}}, {"deployment": {"operator": None}}],
    )
    def test_bad_operator(self, flows: dict[str, Any]) -> None:
        (error,) = errors_of(parse_filter_request, {"flows": flows})
        assert error["type"] == "enum"
        assert error["msg"] == "Input should be 'and_' or 'or_'"
        assert error["ctx"] == {"expected": "'and_' or 'or_'"}

    def test_operators_and_every_field(self) -> None:
        flows = parse_filter_request(
            {
                "flows": {
                    "operator": "or_",
                    "id": {"any_": [FLOW_ID.replace("-", "").upper()], "not_any_": []},
                    "deployment": {"operator": "or_", "is_null_": True},
                    "name": {"any_": ["a"], "like_": "b"},
                    "tags": {"operator": "and_", "all_": ["x"], "is_null_": "false"},
                }
            }
        ).filters.flows
        assert flows is not None
        assert flows.operator is Operator.or_
        assert flows.id is not None and [str(u) for u in flows.id.any_ or []] == [FLOW_ID]
        assert flows.tags is not None and flows.tags.is_null_ is False

    def test_bad_uuid(self) -> None:
        (error,) = errors_of(parse_filter_request, {"flows": {"id": {"any_": ["abc"]}}})
        assert error["type"] == "uuid_parsing"
        assert error["loc"] == ["body", "flows", "id", "any_", 0]
        assert error["msg"].startswith("Input should be a valid UUID")
        assert error["input"] == "abc"

    def test_a_filter_must_be_an_object(self) -> None:
        # Prefect 3.9.1: `{"flows": true}` -> FastAPI validates with from_attributes=True.
        assert errors_of(parse_filter_request, {"flows": True}) == [
            attributes_error(["flows"], True)
        ]

    def test_a_sub_filter_must_be_an_object_too(self) -> None:
        # Prefect 3.9.1: `{"flows": {"name": true}}`.
        assert errors_of(parse_filter_request, {"flows": {"name": True}}) == [
            attributes_error(["flows", "name"], True)
        ]

    def test_strings_are_not_coerced_from_numbers(self) -> None:
        errors = errors_of(parse_filter_request, {"flows": {"name": {"like_": 1, "any_": [2]}}})
        assert [(e["type"], e["loc"][-1]) for e in errors] == [
            ("string_type", 0),
            ("string_type", "like_"),
        ]

    def test_a_non_boolean_is_null(self) -> None:
        (error,) = errors_of(parse_filter_request, {"flows": {"tags": {"is_null_": "maybe"}}})
        assert error["type"] == "bool_parsing"
        assert error["loc"] == ["body", "flows", "tags", "is_null_"]


class TestCrossEntitySchemas:
    def test_state_types(self) -> None:
        body = {"flow_runs": {"state": {"type": {"any_": ["FAILED", "DONE"]}}}}
        assert errors_of(parse_filter_request, body) == [
            {
                "type": "enum",
                "loc": ["body", "flow_runs", "state", "type", "any_", 1],
                "msg": f"Input should be {STATE_TYPES}",
                "input": "DONE",
                "ctx": {"expected": STATE_TYPES},
            }
        ]

    def test_every_flow_run_sub_filter_is_accepted(self) -> None:
        runs = parse_filter_request(
            {
                "flow_runs": {
                    "operator": "or_",
                    "id": {"any_": [FLOW_ID], "not_any_": [FLOW_ID]},
                    "name": {"any_": ["n"], "like_": "n"},
                    "tags": {"operator": "or_", "all_": ["a"], "any_": ["b"], "is_null_": False},
                    "deployment_id": {"operator": "and_", "any_": [FLOW_ID], "is_null_": True},
                    "work_queue_name": {"operator": "and_", "any_": ["q"], "is_null_": True},
                    "state": {
                        "operator": "or_",
                        "type": {"any_": ["COMPLETED"], "not_any_": ["CRASHED"]},
                        "name": {"any_": ["Completed"], "not_any_": ["Late"]},
                    },
                    "flow_version": {"any_": ["1.0"]},
                    "start_time": {
                        "before_": "2020-01-01T00:00:00Z",
                        "after_": "2019-01-01",
                        "is_null_": False,
                    },
                    "end_time": {"before_": None, "after_": None, "is_null_": True},
                    "expected_start_time": {"before_": "2020-01-01T00:00:00+02:00"},
                    "next_scheduled_start_time": {"after_": "2020-01-01T00:00:00"},
                    "parent_flow_run_id": {"operator": "and_", "any_": [FLOW_ID]},
                    "parent_task_run_id": {"operator": "and_", "any_": [], "is_null_": False},
                    "idempotency_key": {"any_": ["k"], "not_any_": ["j"]},
                    "created_by": {"operator": "and_", "id_": [FLOW_ID], "type_": ["DEPLOYMENT"]},
                }
            }
        ).filters.flow_runs
        assert runs is not None
        assert runs.state is not None and runs.state.type is not None
        assert runs.state.type.any_ == [StateType.COMPLETED]
        # A naive time is read as UTC, never as the server's local time.
        assert runs.next_scheduled_start_time is not None
        after = runs.next_scheduled_start_time.after_
        assert after is not None and after.utcoffset() is not None
        assert after.isoformat() == "2020-01-01T00:00:00+00:00"

    @pytest.mark.parametrize(("group", "criterion", "bound"), DATETIME_CRITERIA)
    def test_unparsable_datetime_string(self, group: str, criterion: str, bound: str) -> None:
        # Prefect 3.9.1: pendulum's message as a `value_error`; ctx.error is the exception,
        # which FastAPI's encoder writes as `{}`.
        body = {group: {criterion: {bound: "not a date"}}}
        assert errors_of(parse_filter_request, body) == [
            {
                "type": "value_error",
                "loc": ["body", group, criterion, bound],
                "msg": "Value error, Unable to parse string [not a date]",
                "input": "not a date",
                "ctx": {"error": {}},
            }
        ]

    @pytest.mark.parametrize("value", [[], True, {"a": 1}, 1e20])
    @pytest.mark.parametrize(("group", "criterion", "bound"), DATETIME_CRITERIA)
    def test_datetime_of_another_type(
        self, group: str, criterion: str, bound: str, value: Any
    ) -> None:
        # Prefect 3.9.1: pendulum cannot take it at all; no ctx.
        body = {group: {criterion: {bound: value}}}
        assert errors_of(parse_count_request, body) == [
            {
                "type": "value_error",
                "loc": ["body", group, criterion, bound],
                "msg": "value is not a valid datetime",
                "input": value,
            }
        ]

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("24:00", "hour must be in 0..23"),
            ("2020-02-30", "Unable to parse string [2020-02-30]"),
            ("P1D", "value is not a valid datetime it is a <class 'pendulum.duration.Duration'>"),
        ],
    )
    def test_pendulums_other_messages(self, value: str, message: str) -> None:
        body = {"task_runs": {"end_time": {"after_": value}}}
        (error,) = errors_of(parse_filter_request, body)
        assert (error["type"], error["msg"]) == ("value_error", f"Value error, {message}")

    @pytest.mark.parametrize(
        ("value", "instant"),
        [
            ("2020-01-01", "2020-01-01T00:00:00+00:00"),
            ("2020-01-01T10:00:00+02:00", "2020-01-01T08:00:00+00:00"),
            ("2020-W01", "2019-12-30T00:00:00+00:00"),  # pendulum, not pydantic
            ("2020-001", "2020-01-01T00:00:00+00:00"),
            (5, "1970-01-01T00:00:05+00:00"),
        ],
    )
    def test_datetimes_prefect_accepts(self, value: Any, instant: str) -> None:
        runs = parse_filter_request(
            {"flow_runs": {"expected_start_time": {"before_": value}}}
        ).filters.flow_runs
        assert runs is not None and runs.expected_start_time is not None
        before = runs.expected_start_time.before_
        assert before is not None and type(before) is datetime
        assert before.isoformat() == instant

    def test_flow_run_filter_sub_filters_without_operator(self) -> None:
        for sub in ("id", "name", "flow_version", "start_time", "idempotency_key"):
            (error,) = errors_of(parse_filter_request, {"flow_runs": {sub: {"operator": "or_"}}})
            assert error["type"] == "extra_forbidden", sub

    def test_task_run_flow_run_id_is_null_defaults_to_false(self) -> None:
        runs = parse_filter_request({"task_runs": {"flow_run_id": {}}}).filters.task_runs
        assert runs is not None and runs.flow_run_id is not None
        assert runs.flow_run_id.is_null_ is False
        explicit = parse_filter_request({"task_runs": {"flow_run_id": {"is_null_": None}}})
        task_runs = explicit.filters.task_runs
        assert task_runs is not None and task_runs.flow_run_id is not None
        assert task_runs.flow_run_id.is_null_ is None

    def test_task_run_filters_have_no_flow_run_extras(self) -> None:
        subs: list[dict[str, Any]] = [
            {"tags": {"any_": ["a"]}},
            {"state": {"type": {"not_any_": []}}},
        ]
        for sub in subs:
            (error,) = errors_of(parse_filter_request, {"task_runs": sub})
            assert error["type"] == "extra_forbidden"

    def test_every_task_run_sub_filter_is_accepted(self) -> None:
        runs = parse_count_request(
            {
                "task_runs": {
                    "id": {"any_": [FLOW_ID]},
                    "name": {"any_": ["t"], "like_": "t"},
                    "tags": {"operator": "or_", "all_": ["a"], "is_null_": True},
                    "state": {"operator": "or_", "type": {"any_": ["FAILED"]}, "name": {}},
                    "start_time": {"before_": "2020-01-01T00:00:00Z", "is_null_": False},
                    "end_time": {"after_": "2020-01-01T00:00:00Z", "is_null_": False},
                    "expected_start_time": {"after_": "2020-01-01T00:00:00Z"},
                    "subflow_runs": {"exists_": True},
                    "flow_run_id": {"operator": "or_", "any_": [FLOW_ID], "is_null_": True},
                }
            }
        ).filters.task_runs
        assert runs is not None and runs.subflow_runs is not None
        assert runs.subflow_runs.exists_ is True

    def test_deprecated_concurrency_limit_is_accepted(self) -> None:
        body = {"deployments": {"concurrency_limit": {"ge_": 1, "le_": "5", "is_null_": False}}}
        deployments = parse_count_request(body).filters.deployments
        assert deployments is not None and deployments.concurrency_limit is not None
        assert deployments.concurrency_limit.le_ == 5
        (error,) = errors_of(parse_count_request, {"deployments": {"concurrency_limit": {"x": 1}}})
        assert error["loc"] == ["body", "deployments", "concurrency_limit", "x"]

    def test_deployment_and_work_pool_filters(self) -> None:
        parsed = parse_count_request(
            {
                "deployments": {
                    "operator": "or_",
                    "id": {"any_": [FLOW_ID], "not_any_": []},
                    "name": {"any_": ["d"], "like_": "d"},
                    "flow_or_deployment_name": {"like_": "x"},
                    "paused": {"eq_": True},
                    "tags": {"operator": "or_", "all_": [], "any_": ["p"], "is_null_": False},
                    "work_queue_name": {"any_": ["q"]},
                },
                "work_pools": {
                    "operator": "or_",
                    "id": {"any_": [FLOW_ID]},
                    "name": {"any_": ["pool"]},
                    "type": {"any_": ["process"]},
                },
            }
        ).filters
        assert parsed.deployments is not None and parsed.work_pools is not None
        (error,) = errors_of(parse_count_request, {"work_pools": {"name": {"like_": "p"}}})
        assert error["loc"] == ["body", "work_pools", "name", "like_"]


class TestPaginate:
    def test_defaults(self) -> None:
        request = parse_paginate_request({})
        assert (request.limit, request.page, request.offset) == (200, 1, 0)
        assert request.sort is FlowSort.NAME_ASC

    def test_offset_from_page(self) -> None:
        assert parse_paginate_request({"page": 3, "limit": 10}).offset == 20
        assert parse_paginate_request({"page": None}).page == 1

    def test_page_zero(self) -> None:
        assert errors_of(parse_paginate_request, {"page": 0}) == [
            {
                "type": "greater_than_equal",
                "loc": ["body", "page"],
                "msg": "Input should be greater than or equal to 1",
                "input": 0,
                "ctx": {"ge": 1},
            }
        ]

    def test_limit_rules_are_the_filter_ones(self) -> None:
        with pytest.raises(InvalidLimit):
            parse_paginate_request({"limit": 201, "page": 0})
        assert parse_paginate_request({"limit": 0}).limit == 0


class TestBulkDelete:
    def test_defaults(self) -> None:
        request = parse_bulk_delete_request({})
        assert (request.flows, request.limit) == (None, 50)
        assert parse_bulk_delete_request(None).limit == 50
        assert parse_bulk_delete_request({"limit": None, "other": 1}).limit == 50

    @pytest.mark.parametrize(
        ("limit", "error"),
        [
            (
                51,
                {
                    "type": "less_than_equal",
                    "msg": "Input should be less than or equal to 50",
                    "ctx": {"le": 50},
                },
            ),
            (
                0,
                {
                    "type": "greater_than_equal",
                    "msg": "Input should be greater than or equal to 1",
                    "ctx": {"ge": 1},
                },
            ),
        ],
    )
    def test_limit_range_is_a_validation_error(self, limit: int, error: dict[str, Any]) -> None:
        assert errors_of(parse_bulk_delete_request, {"limit": limit}) == [
            {**error, "loc": ["body", "limit"], "input": limit}
        ]

    def test_a_non_object_flow_filter(self) -> None:
        # Prefect 3.9.1: bulk_delete `{"flows": 5}`.
        assert errors_of(parse_bulk_delete_request, {"flows": 5}) == [
            attributes_error(["flows"], 5)
        ]

    def test_a_limit_beyond_64_bits(self) -> None:
        # Prefect 3.9.1: `{"limit": 9223372036854775808}`, the input echoed exactly.
        assert errors_of(parse_bulk_delete_request, {"limit": 2**63}) == [
            {
                "type": "less_than_equal",
                "loc": ["body", "limit"],
                "msg": "Input should be less than or equal to 50",
                "input": 2**63,
                "ctx": {"le": 50},
            }
        ]

    def test_flow_filter(self) -> None:
        request = parse_bulk_delete_request({"flows": {"id": {"any_": [FLOW_ID]}}, "limit": "2"})
        assert request.limit == 2
        assert request.flows is not None and request.flows.id is not None
        (error,) = errors_of(parse_bulk_delete_request, {"flows": {"tags": {"any_": []}}})
        assert error["loc"] == ["body", "flows", "tags", "any_"]


class TestReadRequests:
    @pytest.mark.parametrize(
        "spelling",
        [
            FLOW_ID,
            FLOW_ID.upper(),
            FLOW_ID.replace("-", ""),
            "16f3851d39da-4c5a-9d99-c10251805eb4",  # Starlette lets each dash be omitted
        ],
    )
    def test_any_uuid_spelling_becomes_canonical(self, spelling: str) -> None:
        assert parse_read_request({"id": spelling, "extra": True}) == FLOW_ID

    @pytest.mark.parametrize(
        "bad", ["not-a-uuid", FLOW_ID + "0", "{" + FLOW_ID + "}", "urn:uuid:" + FLOW_ID, ""]
    )
    def test_malformed_id(self, bad: str) -> None:
        (error,) = errors_of(parse_read_request, {"id": bad})
        assert error["type"] == "uuid_parsing"
        assert error["loc"] == ["body", "id"]
        assert error["msg"].startswith("Input should be a valid UUID, ")
        assert error["input"] == bad

    def test_id_of_wrong_type(self) -> None:
        assert errors_of(parse_read_request, {"id": 5}) == [
            {
                "type": "uuid_type",
                "loc": ["body", "id"],
                "msg": "UUID input should be a string, bytes or UUID object",
                "input": 5,
            }
        ]

    @pytest.mark.parametrize("body", [{}, {"id": None}, [], "x"])
    def test_missing_id(self, body: Any) -> None:
        assert errors_of(parse_read_request, body) == [missing("id")]

    @pytest.mark.parametrize("name", ["my-flow", "my/flow", "   ", "my👍flow", "a%b", ""])
    def test_name_is_any_string_verbatim(self, name: str) -> None:
        assert parse_read_by_name_request({"name": name, "x": 1}) == name

    @pytest.mark.parametrize("name", [123, True, ["a"], {"a": 1}])
    def test_name_must_be_a_string(self, name: Any) -> None:
        (error,) = errors_of(parse_read_by_name_request, {"name": name})
        assert error["type"] == "string_type"
        assert error["loc"] == ["body", "name"]
        assert error["msg"] == "Input should be a valid string"

    def test_missing_name(self) -> None:
        assert errors_of(parse_read_by_name_request, {"name": None}) == [missing("name")]
