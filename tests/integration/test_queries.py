"""Queries on the wire: read, read_by_name, filter, count, paginate (Prefect §3-§6, facts A14-A32).

The read model's cross-entity tables (deployments, flow runs, task runs, work pools) are empty
in this service, so filters on them are checked against that empty state. On a real
nats-server, or in-process under `pytest --transport=memory` (tests/integration/transport.py).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from tests.integration.conftest import Wire
from tests.integration.wire import (
    assert_error,
    assert_success,
    assert_validation_error,
)

NOT_FOUND = b'{"detail":"Flow not found"}'

pytestmark = pytest.mark.in_process
SORTS = "'CREATED_DESC', 'UPDATED_DESC', 'NAME_ASC' or 'NAME_DESC'"
# The §6 data set (flows only), in creation order.
DATASET = [
    ("alpha", ["db", "blue"]),
    ("beta", ["db"]),
    ("gamma", []),
    ("Delta-Marvin", ["red"]),
    ("a_c", []),
    ("abc", []),
]
BY_NAME = ["Delta-Marvin", "a_c", "abc", "alpha", "beta", "gamma"]  # code-point order


async def create(wire: Wire, name: str, tags: list[str] | None = None) -> dict[str, Any]:
    reply = await wire("cmd.create", {"name": name, "tags": tags or []})
    assert_success(reply, 201)
    flow: dict[str, Any] = reply.json
    return flow


@pytest.fixture
async def dataset(wire: Wire) -> dict[str, dict[str, Any]]:
    """The §6 flows, created one after the other (so `created` orders them)."""
    return {name: await create(wire, name, tags) for name, tags in DATASET}


async def names(wire: Wire, body: Any = None, operation: str = "query.filter") -> list[str]:
    reply = await wire(operation, body)
    assert_success(reply, 200)
    return [flow["name"] for flow in reply.json]


async def count(wire: Wire, body: Any = None) -> int:
    reply = await wire("query.count", body)
    assert_success(reply, 200)
    assert reply.data.isdigit(), reply.data  # a bare JSON integer
    return int(reply.data)


class TestRead:
    async def test_read_answers_the_flow_byte_for_byte(self, wire: Wire) -> None:
        created = await wire("cmd.create", {"name": "my-flow", "tags": ["a"], "labels": {"n": 1}})
        reply = await wire("query.read", {"id": created.json["id"]})
        assert_success(reply, 200)
        assert reply.data == created.data

    async def test_any_uuid_spelling_reads_the_same_flow(self, wire: Wire) -> None:
        created = await wire("cmd.create", {"name": "spelled"})
        flow_id = created.json["id"]
        for spelling in (
            flow_id.upper(),
            flow_id.replace("-", ""),
            flow_id.replace("-", "").upper(),
        ):
            reply = await wire("query.read", {"id": spelling})
            assert_success(reply, 200)
            assert reply.data == created.data

    async def test_an_unknown_id_is_404(self, wire: Wire) -> None:
        reply = await wire("query.read", {"id": str(uuid.uuid4())})
        assert_error(reply, 404)
        assert reply.data == NOT_FOUND

    async def test_a_missing_id_is_a_validation_error(self, wire: Wire) -> None:
        reply = await wire("query.read", {})
        missing = {"type": "missing", "loc": ["body", "id"], "msg": "Field required", "input": None}
        assert_validation_error(reply, [missing], {})

    @pytest.mark.parametrize("flow_id", ["not-a-uuid", 5, "{16f3851d-39da-4c5a-9d99-c10251805eb4}"])
    async def test_a_malformed_id_is_a_validation_error_at_body_id(
        self, wire: Wire, flow_id: Any
    ) -> None:
        reply = await wire("query.read", {"id": flow_id})
        assert_error(reply, 422)
        body = reply.json
        assert body["exception_message"] == "Invalid request received."
        assert [error["loc"] for error in body["exception_detail"]] == [["body", "id"]]
        assert body["request_body"] == {"id": flow_id}


class TestReadByName:
    async def test_exact_name(self, wire: Wire) -> None:
        created = await wire("cmd.create", {"name": "my-flow"})
        reply = await wire("query.read_by_name", {"name": "my-flow"})
        assert_success(reply, 200)
        assert reply.data == created.data

    @pytest.mark.parametrize("other", ["MY-FLOW", "my-flow ", " my-flow", "my-flo", "my_flow"])
    async def test_lookup_is_exact_and_case_sensitive(self, wire: Wire, other: str) -> None:
        await wire("cmd.create", {"name": "my-flow"})
        reply = await wire("query.read_by_name", {"name": other})
        assert_error(reply, 404)
        assert reply.data == NOT_FOUND

    async def test_odd_names_are_found_verbatim(self, wire: Wire) -> None:
        odd = ["my👍flow", "my flow", "tab\there", "new\nline", "trailing ", "   ", "my\\flow"]
        created = {name: await create(wire, name) for name in odd}
        for name in odd:
            reply = await wire("query.read_by_name", {"name": name})
            assert_success(reply, 200)
            assert reply.json == created[name]
        # Near misses of the odd names find nothing.
        for near in ["my👎flow", "tab here", "new\rline", "trailing", "  "]:
            assert_error(await wire("query.read_by_name", {"name": near}), 404)

    async def test_a_name_that_can_never_exist_is_simply_not_found(self, wire: Wire) -> None:
        reply = await wire("query.read_by_name", {"name": "my/flow"})
        assert_error(reply, 404)

    async def test_a_missing_or_non_string_name_is_a_validation_error(self, wire: Wire) -> None:
        reply = await wire("query.read_by_name", {})
        missing = {
            "type": "missing",
            "loc": ["body", "name"],
            "msg": "Field required",
            "input": None,
        }
        assert_validation_error(reply, [missing], {})
        typed = await wire("query.read_by_name", {"name": 5})
        error = {"type": "string_type", "loc": ["body", "name"],
                 "msg": "Input should be a valid string", "input": 5}  # fmt: skip
        assert_validation_error(typed, [error], {"name": 5})


class TestPrefectApiFacts:
    """Facts A14-A32 of `tests/server/orchestration/api/test_flows.py` (two flows)."""

    @pytest.fixture
    async def two(self, wire: Wire) -> list[dict[str, Any]]:
        return [await create(wire, "my-flow-1"), await create(wire, "my-flow-2")]

    async def test_a14_a15_a16_filter(self, wire: Wire, two: list[dict[str, Any]]) -> None:
        reply = await wire("query.filter")
        assert_success(reply, 200)
        assert reply.data == orjson.dumps(two)
        assert len((await wire("query.filter", {"limit": 1})).json) == 1
        only = await wire("query.filter", {"flows": {"name": {"any_": ["my-flow-1"]}}})
        assert only.json == [two[0]]

    async def test_a20_deployment_is_null(self, wire: Wire, two: list[dict[str, Any]]) -> None:
        # No deployments exist: every flow has none.
        assert await names(wire, {"flows": {"deployment": {"is_null_": True}}}) == [
            "my-flow-1",
            "my-flow-2",
        ]
        assert await names(wire, {"flows": {"deployment": {"is_null_": False}}}) == []

    async def test_a21_a22_offset_and_sort(self, wire: Wire, two: list[dict[str, Any]]) -> None:
        assert await names(wire, {"offset": 1}) == ["my-flow-2"]
        assert (await names(wire, {"sort": "NAME_ASC"}))[0] == "my-flow-1"
        assert (await names(wire, {"sort": "NAME_DESC"}))[0] == "my-flow-2"

    async def test_a23_a31_an_empty_read_model(self, wire: Wire) -> None:
        empty = await wire("query.filter")
        assert_success(empty, 200)
        assert empty.data == b"[]"
        assert (await wire("query.count")).data == b"0"
        page = await wire("query.paginate")
        assert page.json == {"results": [], "count": 0, "limit": 200, "pages": 0, "page": 1}

    async def test_a26_a27_a29_a30_paginate(self, wire: Wire, two: list[dict[str, Any]]) -> None:
        everything = await wire("query.paginate")
        assert_success(everything, 200)
        assert everything.data == orjson.dumps(
            {"results": two, "count": 2, "limit": 200, "pages": 1, "page": 1}
        )
        first = (await wire("query.paginate", {"limit": 1})).json
        assert first == {"results": [two[0]], "count": 2, "limit": 1, "pages": 2, "page": 1}
        second = (await wire("query.paginate", {"page": 2, "limit": 1})).json
        assert second == {"results": [two[1]], "count": 2, "limit": 1, "pages": 2, "page": 2}
        desc = (await wire("query.paginate", {"sort": "NAME_DESC"})).json
        assert [flow["name"] for flow in desc["results"]] == ["my-flow-2", "my-flow-1"]

    async def test_a28_paginate_applies_the_filters(
        self, wire: Wire, two: list[dict[str, Any]]
    ) -> None:
        page = (await wire("query.paginate", {"flows": {"name": {"any_": ["my-flow-1"]}}})).json
        assert page == {"results": [two[0]], "count": 1, "limit": 200, "pages": 1, "page": 1}
        runs = await wire("query.paginate", {"flow_runs": {"id": {"any_": [str(uuid.uuid4())]}}})
        assert runs.json == {"results": [], "count": 0, "limit": 200, "pages": 0, "page": 1}

    async def test_a32_paginate_limit_0_has_0_pages(
        self, wire: Wire, two: list[dict[str, Any]]
    ) -> None:
        reply = await wire("query.paginate", {"limit": 0})
        assert_success(reply, 200)
        assert reply.data == b'{"results":[],"count":2,"limit":0,"pages":0,"page":1}'


class TestFlowFilters:
    """The §6 filter examples that involve only flows, on the §6 data set."""

    @pytest.mark.parametrize(
        ("flows", "expected"),
        [
            ({"name": {"any_": ["alpha", "beta", "nope"]}}, ["alpha", "beta"]),
            ({"name": {"any_": []}}, []),
            ({"name": {"any_": ["ALPHA"]}}, []),
            ({"name": {"like_": "MARVIN"}}, ["Delta-Marvin"]),
            ({"name": {"like_": "a_c"}}, ["a_c", "abc"]),  # `_` is a live wildcard
            ({"name": {"like_": "%"}}, BY_NAME),
            ({"name": {"like_": ""}}, BY_NAME),
            ({"name": {"like_": "ph", "any_": ["alpha", "beta"]}}, ["alpha"]),
            ({"tags": {"all_": ["db"]}}, ["alpha", "beta"]),
            ({"tags": {"all_": ["db", "blue"]}}, ["alpha"]),
            ({"tags": {"all_": ["blue", "db", "db"]}}, ["alpha"]),
            ({"tags": {"all_": ["DB"]}}, []),
            ({"tags": {"all_": []}}, BY_NAME),
            ({"tags": {"is_null_": True}}, ["a_c", "abc", "gamma"]),
            ({"tags": {"is_null_": False}}, ["Delta-Marvin", "alpha", "beta"]),
            ({"tags": {"operator": "or_", "all_": ["red"], "is_null_": True}},
             ["Delta-Marvin", "a_c", "abc", "gamma"]),
            ({"operator": "or_", "name": {"any_": ["alpha"]}, "tags": {"all_": ["red"]}},
             ["Delta-Marvin", "alpha"]),
            # `or_` with an empty (TRUE) sub-filter matches everything; `and_` is unaffected.
            ({"operator": "or_", "name": {}, "tags": {"all_": ["red"]}}, BY_NAME),
            ({"operator": "or_", "name": {"like_": ""}, "tags": {"all_": ["red"]}}, BY_NAME),
            ({"operator": "and_", "name": {}, "tags": {"all_": ["red"]}}, ["Delta-Marvin"]),
            ({"deployment": {"is_null_": True}}, BY_NAME),
            ({"deployment": {"is_null_": False}}, []),
            ({}, BY_NAME),
        ],
    )  # fmt: skip
    async def test_filter_and_count_agree(
        self,
        wire: Wire,
        dataset: dict[str, dict[str, Any]],
        flows: dict[str, Any],
        expected: list[str],
    ) -> None:
        assert await names(wire, {"flows": flows}) == expected
        assert await count(wire, {"flows": flows}) == len(expected)

    async def test_ids(self, wire: Wire, dataset: dict[str, dict[str, Any]]) -> None:
        ids = {name: flow["id"] for name, flow in dataset.items()}
        body = {"flows": {"id": {"not_any_": [ids["alpha"]]}, "name": {"any_": ["alpha", "beta"]}}}
        assert await names(wire, body) == ["beta"]
        body = {"flows": {"id": {"any_": [ids["alpha"], ids["beta"], ids["gamma"]],
                                 "not_any_": [ids["beta"]]}}}  # fmt: skip
        assert await names(wire, body) == ["alpha", "gamma"]
        body = {"flows": {"id": {"not_any_": [ids["alpha"]]}, "name": {"like_": "a"}}}
        assert await names(wire, body) == ["Delta-Marvin", "a_c", "abc", "beta", "gamma"]
        assert await names(wire, {"flows": {"id": {"any_": []}}}) == []
        assert await names(wire, {"flows": {"id": {"not_any_": []}}}) == BY_NAME
        assert await names(wire, {"flows": {"id": {"any_": [str(uuid.uuid4())]}}}) == []
        # any UUID spelling works inside a filter too
        upper = ids["gamma"].upper()
        assert await names(wire, {"flows": {"id": {"any_": [upper]}}}) == ["gamma"]

    async def test_null_filters_are_absent(
        self, wire: Wire, dataset: dict[str, dict[str, Any]]
    ) -> None:
        body = {"flows": None, "flow_runs": None, "task_runs": None, "deployments": None,
                "work_pools": None, "sort": None, "limit": None, "offset": None}  # fmt: skip
        assert await names(wire, body) == BY_NAME
        assert await count(wire, body) == 6


class TestCrossEntityFiltersOnEmptyTables:
    """A present-but-empty cross filter still needs one related row; there are none here."""

    @pytest.mark.parametrize(
        "body",
        [
            {"flow_runs": {}},
            {"task_runs": {}},
            {"deployments": {}},
            {"work_pools": {}},
            {"flow_runs": {"state": {"type": {"any_": ["FAILED"]}}}},
            {"deployments": {"paused": {"eq_": True}}},
            {"work_pools": {"type": {"any_": ["kubernetes"]}}},
            {"flow_runs": {"tags": {"all_": ["nightly"]}}, "task_runs": {"name": {"like_": "g"}}},
        ],
    )
    async def test_match_nothing(
        self, wire: Wire, dataset: dict[str, dict[str, Any]], body: dict[str, Any]
    ) -> None:
        assert await names(wire, body) == []
        assert await count(wire, body) == 0
        page = (await wire("query.paginate", body)).json
        assert page == {"results": [], "count": 0, "limit": 200, "pages": 0, "page": 1}

    async def test_the_flow_filter_still_combines_with_them(
        self, wire: Wire, dataset: dict[str, dict[str, Any]]
    ) -> None:
        body = {"flows": {"deployment": {"is_null_": True}}, "deployments": {}}
        assert await names(wire, body) == []
        assert await count(wire, {"flows": {"deployment": {"is_null_": True}}}) == 6


class TestSorting:
    async def test_sorts(self, wire: Wire, dataset: dict[str, dict[str, Any]]) -> None:
        creation = [name for name, _ in DATASET]
        assert await names(wire) == BY_NAME
        assert await names(wire, {"sort": "NAME_ASC"}) == BY_NAME
        assert await names(wire, {"sort": "NAME_DESC"}) == BY_NAME[::-1]
        assert await names(wire, {"sort": "CREATED_DESC"}) == creation[::-1]
        assert await names(wire, {"sort": "UPDATED_DESC"}) == creation[::-1]
        # A patched flow comes first by UPDATED_DESC, keeps its place by CREATED_DESC.
        assert_success(await wire("cmd.update", {"id": dataset["beta"]["id"]}), 204)
        updated = ["beta"] + [name for name in creation[::-1] if name != "beta"]
        assert await names(wire, {"sort": "UPDATED_DESC"}) == updated
        assert await names(wire, {"sort": "CREATED_DESC"}) == creation[::-1]
        page = (await wire("query.paginate", {"sort": "UPDATED_DESC", "limit": 2})).json
        assert [flow["name"] for flow in page["results"]] == updated[:2]

    @pytest.mark.parametrize("sort", ["NAME", "name_asc", "Name_Asc", ""])
    async def test_an_unknown_sort_is_an_enum_error(self, wire: Wire, sort: str) -> None:
        for operation in ("query.filter", "query.paginate"):
            reply = await wire(operation, {"sort": sort})
            error = {"type": "enum", "loc": ["body", "sort"], "msg": f"Input should be {SORTS}",
                     "input": sort, "ctx": {"expected": SORTS}}  # fmt: skip
            assert_validation_error(reply, [error], {"sort": sort})


class TestLimitAndOffset:
    async def test_limit_and_offset_window_the_sorted_result(
        self, wire: Wire, dataset: dict[str, dict[str, Any]]
    ) -> None:
        assert await names(wire, {"limit": 2}) == BY_NAME[:2]
        assert await names(wire, {"limit": 2, "offset": 2}) == BY_NAME[2:4]
        assert await names(wire, {"offset": 5}) == BY_NAME[5:]
        assert await names(wire, {"offset": 6}) == []
        assert await names(wire, {"offset": 10**6}) == []
        assert await names(wire, {"limit": 0}) == []
        assert await names(wire, {"limit": "2"}) == BY_NAME[:2]  # lax mode coerces
        assert await names(wire, {"limit": 2.0}) == BY_NAME[:2]
        assert await names(wire, {"limit": 200}) == BY_NAME
        # count takes no limit: the key is ignored like any unknown key
        assert await count(wire, {"limit": 1}) == 6
        assert await count(wire, {"limit": 10_000}) == 6

    async def test_the_default_and_maximum_limit_is_200(self, wire: Wire) -> None:
        await asyncio.gather(*(create(wire, f"many-{i:03d}") for i in range(201)))
        assert len(await names(wire)) == 200
        assert await count(wire) == 201
        page = (await wire("query.paginate")).json
        assert (page["count"], page["limit"], page["pages"], len(page["results"])) == (
            201, 200, 2, 200,
        )  # fmt: skip
        last = (await wire("query.paginate", {"page": 2})).json
        assert [flow["name"] for flow in last["results"]] == ["many-200"]

    @pytest.mark.parametrize("operation", ["query.filter", "query.paginate"])
    @pytest.mark.parametrize(
        ("limit", "detail"),
        [
            (201, b'{"detail":"Invalid limit: must be less than or equal to 200."}'),
            (10**6, b'{"detail":"Invalid limit: must be less than or equal to 200."}'),
            (-1, b'{"detail":"Invalid limit: must be greater than or equal to 0."}'),
        ],
    )
    async def test_limits_out_of_range_get_the_plain_detail_shape(
        self, wire: Wire, operation: str, limit: int, detail: bytes
    ) -> None:
        reply = await wire(operation, {"limit": limit})
        assert_error(reply, 422)
        assert reply.data == detail

    async def test_a_non_integer_limit_is_a_validation_error(self, wire: Wire) -> None:
        reply = await wire("query.filter", {"limit": 1.5})
        error = {"type": "int_from_float", "loc": ["body", "limit"],
                 "msg": "Input should be a valid integer, got a number with a fractional part",
                 "input": 1.5}  # fmt: skip
        assert_validation_error(reply, [error], {"limit": 1.5})

    async def test_a_negative_offset_is_a_validation_error(self, wire: Wire) -> None:
        reply = await wire("query.filter", {"offset": -1})
        error = {"type": "greater_than_equal", "loc": ["body", "offset"],
                 "msg": "Input should be greater than or equal to 0", "input": -1,
                 "ctx": {"ge": 0}}  # fmt: skip
        assert_validation_error(reply, [error], {"offset": -1})

    async def test_page_0_is_a_validation_error(self, wire: Wire) -> None:
        reply = await wire("query.paginate", {"page": 0})
        error = {"type": "greater_than_equal", "loc": ["body", "page"],
                 "msg": "Input should be greater than or equal to 1", "input": 0,
                 "ctx": {"ge": 1}}  # fmt: skip
        assert_validation_error(reply, [error], {"page": 0})

    async def test_a_page_past_the_end_is_empty(
        self, wire: Wire, dataset: dict[str, dict[str, Any]]
    ) -> None:
        page = (await wire("query.paginate", {"page": 3, "limit": 4})).json
        assert page == {"results": [], "count": 6, "limit": 4, "pages": 2, "page": 3}
        second = (await wire("query.paginate", {"page": 2, "limit": 4})).json
        assert [flow["name"] for flow in second["results"]] == BY_NAME[4:]


class TestRequestBodies:
    @pytest.mark.parametrize("operation", ["query.filter", "query.count", "query.paginate"])
    async def test_an_empty_payload_means_an_empty_object(
        self, wire: Wire, dataset: dict[str, dict[str, Any]], operation: str
    ) -> None:
        empty = await wire(operation, b"")
        braces = await wire(operation, b"{}")
        assert_success(empty, 200)
        assert empty.data == braces.data

    async def test_unknown_top_level_keys_are_ignored(
        self, wire: Wire, dataset: dict[str, dict[str, Any]]
    ) -> None:
        assert await names(wire, {"bogus": 1, "page": 7}) == BY_NAME
        assert await count(wire, {"bogus": {"x": 1}}) == 6

    @pytest.mark.parametrize(
        ("operation", "payload", "position", "message"),
        [
            ("query.filter", '{"limit": ', 10, "Expecting value"),
            ("query.count", "{} x", 3, "Extra data"),
            ("query.paginate", '{"flows": {]}', 11,
             "Expecting property name enclosed in double quotes"),
            ("query.read", "{'id': 1}", 1, "Expecting property name enclosed in double quotes"),
            ("query.read_by_name", "nul", 0, "Expecting value"),
        ],
    )  # fmt: skip
    async def test_malformed_json_is_json_invalid(
        self, wire: Wire, operation: str, payload: str, position: int, message: str
    ) -> None:
        reply = await wire(operation, payload.encode())
        error = {"type": "json_invalid", "loc": ["body", position], "msg": "JSON decode error",
                 "input": {}, "ctx": {"error": message}}  # fmt: skip
        assert_validation_error(reply, [error], payload)

    async def test_a_non_object_body_fails_every_parameter(self, wire: Wire) -> None:
        reply = await wire("query.filter", b"[]")
        params = ["limit", "offset", "flows", "flow_runs", "task_runs", "deployments",
                  "work_pools", "sort"]  # fmt: skip
        missing = [{"type": "missing", "loc": ["body", p], "msg": "Field required", "input": None}
                   for p in params]  # fmt: skip
        assert_validation_error(reply, missing, [])

    @pytest.mark.parametrize(
        ("flows", "error"),
        [
            ({"tags": {"any_": ["db"]}},
             {"type": "extra_forbidden", "loc": ["body", "flows", "tags", "any_"],
              "msg": "Extra inputs are not permitted", "input": ["db"]}),
            ({"name": {"operator": "or_"}},
             {"type": "extra_forbidden", "loc": ["body", "flows", "name", "operator"],
              "msg": "Extra inputs are not permitted", "input": "or_"}),
            ({"labels": {}},
             {"type": "extra_forbidden", "loc": ["body", "flows", "labels"],
              "msg": "Extra inputs are not permitted", "input": {}}),
            ({"operator": "xor"},
             {"type": "enum", "loc": ["body", "flows", "operator"],
              "msg": "Input should be 'and_' or 'or_'", "input": "xor",
              "ctx": {"expected": "'and_' or 'or_'"}}),
            ({"tags": {"is_null_": "maybe"}},
             {"type": "bool_parsing", "loc": ["body", "flows", "tags", "is_null_"],
              "msg": "Input should be a valid boolean, unable to interpret input",
              "input": "maybe"}),
        ],
    )  # fmt: skip
    async def test_invalid_filters_are_validation_errors(
        self, wire: Wire, flows: dict[str, Any], error: dict[str, Any]
    ) -> None:
        for operation in ("query.filter", "query.count", "query.paginate"):
            reply = await wire(operation, {"flows": flows})
            assert_validation_error(reply, [error], {"flows": flows})
