"""Which way a page of a `flows.tags.all_` filter finds its flows (projections/tag_plan.py)."""

from __future__ import annotations

from typing import Any

import pytest

from events.contract.queries import parse_filter_request
from projections.tag_plan import driving_tag, required_tags, starts_from_tag, without_needles


@pytest.mark.parametrize(
    ("flows", "required"),
    [
        ({"tags": {"all_": ["a", "b"]}}, ["a", "b"]),
        ({"tags": {"all_": ["a"]}, "name": {"like_": "x"}}, ["a"]),
        ({"operator": "or_", "tags": {"all_": ["a"]}}, ["a"]),  # nothing else to OR with
        ({"operator": "or_", "tags": {"all_": ["a"]}, "name": {"like_": "x"}}, None),
        ({"operator": "or_", "tags": {"all_": ["a"]}, "id": {}}, None),  # {} matches every flow
        ({"tags": {"all_": ["a"], "is_null_": False}}, ["a"]),
        ({"tags": {"operator": "or_", "all_": ["a"], "is_null_": True}}, None),
        ({"tags": {"operator": "or_", "all_": ["a"]}}, ["a"]),
        ({"tags": {"all_": []}}, None),
        ({"tags": {"is_null_": False}}, None),
        ({"name": {"like_": "x"}}, None),
    ],
)
def test_the_tags_every_match_must_carry(flows: dict[str, Any], required: list[str] | None) -> None:
    assert required_tags(parse_filter_request({"flows": flows}).filters) == required


def test_a_tag_few_flows_carry_is_started_from_a_common_one_is_not() -> None:
    # 500 carriers behind 20,000 other flows: ~9 ms walking, ~0.8 ms from the tag (measured).
    assert starts_from_tag(500, 21_000, limit=200, offset=0)
    # The same 500 among 1,000 flows: a walk fills the page after ~400 flows.
    assert not starts_from_tag(500, 1_000, limit=200, offset=0)
    assert not starts_from_tag(500_000, 1_000_000, limit=200, offset=0)
    assert starts_from_tag(10, 1_000_000, limit=200, offset=0)
    assert starts_from_tag(0, 1_000_000, limit=200, offset=0)  # nothing to fetch
    assert not starts_from_tag(0, 0, limit=200, offset=0)  # nothing to walk either


def test_the_rarest_needle_is_started_from() -> None:
    asked: list[list[str]] = []

    def counts(tags: list[str]) -> tuple[dict[str, int], int]:
        asked.append(tags)
        return {"common": 90_000, "rare": 40}, 100_000

    filters = parse_filter_request({"flows": {"tags": {"all_": ["common", "rare", "rare"]}}})
    assert driving_tag(filters.filters, 200, 0, counts) == "rare"
    assert asked == [["common", "rare"]]  # each once, sorted
    common_only = parse_filter_request({"flows": {"tags": {"all_": ["common"]}}})
    assert driving_tag(common_only.filters, 200, 0, counts) is None
    unknown = parse_filter_request({"flows": {"tags": {"all_": ["common", "nobody"]}}})
    assert driving_tag(unknown.filters, 200, 0, counts) == "nobody"  # carried by no flow


def test_a_page_started_from_its_only_needle_does_not_test_for_it_again() -> None:
    """Every flow started from carries the tag, so the per-flow check goes (a third of the
    page's time); with other needles, or other criteria, the rest stays."""
    only = parse_filter_request(
        {"flows": {"tags": {"all_": ["rare", "rare"], "is_null_": False}, "name": {"like_": "x"}}}
    ).filters
    lighter = without_needles(only, "rare")
    assert lighter.flows is not None and lighter.flows.tags is not None
    assert lighter.flows.tags.all_ is None
    assert (lighter.flows.tags.is_null_, lighter.flows.name) == (False, only.flows.name)  # type: ignore[union-attr]
    several = parse_filter_request({"flows": {"tags": {"all_": ["rare", "common"]}}}).filters
    assert without_needles(several, "rare") == several
    either = parse_filter_request(
        {"flows": {"operator": "or_", "tags": {"all_": ["rare"]}, "name": {"like_": "x"}}}
    ).filters
    assert without_needles(either, "rare") == either  # not required: never started from
