"""A filter's shape keys one statement: requests that differ only in their values share it, and
requests whose SQL must differ never do."""

from __future__ import annotations

from typing import Any

import pytest

from events.contract.queries import parse_filter_request
from projections.filter_sql import describe_filters
from projections.queries import documents_query


def shape(body: dict[str, Any]) -> object:
    return describe_filters(parse_filter_request(body).filters).shape


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"flows": {"name": {"like_": "a"}}}, {"flows": {"name": {"like_": "bcd"}}}),
        ({"flows": {"tags": {"all_": ["a", "b"]}}}, {"flows": {"tags": {"all_": ["x", "y", "z"]}}}),
        ({"flows": {"name": {"any_": ["x", "y"]}}}, {"flows": {"name": {"any_": ["p", "q", "r"]}}}),
        (
            {"flow_runs": {"start_time": {"before_": "2026-01-01T00:00:00Z"}}},
            {"flow_runs": {"start_time": {"before_": "2027-05-05T10:00:00Z"}}},
        ),
    ],
)
def test_requests_differing_only_in_values_share_a_shape(
    one: dict[str, Any], other: dict[str, Any]
) -> None:
    assert shape(one) == shape(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"flows": {"name": {"like_": "a"}}}, {"flows": {"name": {"like_": ""}}}),
        ({"flows": {"name": {"like_": "a"}}}, {"flows": {"name": {"any_": ["a"]}}}),
        ({"flows": {"tags": {"all_": ["a"]}}}, {"flows": {"tags": {"all_": ["a", "b"]}}}),
        ({"flows": {"tags": {"all_": ["a"]}}}, {"flows": {"tags": {"all_": []}}}),
        ({"flows": {"tags": {"all_": ["a"]}}}, {"flows": {"tags": {"all_": ["a\u0000"]}}}),
        ({"flows": {"tags": {"is_null_": True}}}, {"flows": {"tags": {"is_null_": False}}}),
        ({"flows": {"operator": "and_"}}, {"flows": {"operator": "or_"}}),
        ({"flows": {}}, {}),
        ({"flows": {"name": {}}}, {"flows": {}}),
        ({"flows": {"id": {"any_": []}}}, {"flows": {"name": {"any_": []}}}),
    ],
)
def test_requests_needing_other_sql_have_other_shapes(
    one: dict[str, Any], other: dict[str, Any]
) -> None:
    assert shape(one) != shape(other)


def test_a_shape_met_again_reuses_its_statement_with_the_new_values() -> None:
    def query(body: dict[str, Any]) -> Any:
        request = parse_filter_request(body)
        prepared = documents_query(
            "sqlite", request.filters, request.sort, request.limit, request.offset
        )
        assert prepared is not None
        return prepared

    first = query({"flows": {"name": {"like_": "a"}}, "limit": 3})
    second = query({"flows": {"name": {"like_": "b"}}, "limit": 4, "offset": 2})
    assert second.statement is first.statement
    assert (first.params["f__flows__name__like_"], second.params["f__flows__name__like_"]) == (
        "%a%",
        "%b%",
    )
    assert (second.params["page__limit"], second.params["page__offset"]) == (4, 2)
    sorted_otherwise = query({"flows": {"name": {"like_": "b"}}, "sort": "CREATED_DESC"})
    assert sorted_otherwise.statement is not first.statement
