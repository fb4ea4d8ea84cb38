"""Which way a page of a `flows.tags.all_` filter finds its flows on SQLite.

A page (filter, paginate) is sorted and limited, and SQLite answers it by walking the flows in
sort order (the name index for the default sort), testing each against the filter, until the
page is full. That stops early when matches are common, and walks nearly the whole table when
they are rare or sorted late: 200 of 500 flows tagged `blue` behind 7,500 untagged ones took
4.4 ms a page (9.4 ms behind 20,000), against 0.7 ms without them. The other way is to start
from the rarest needle's `flow_tag` rows (every match carries it), fetch those flows, test
them and sort: 0.8 ms for the same page whatever else the model holds, but a cost that grows
with the tag's size.

SQLite keeps no statistics of how many flows carry a tag, but the projector does (the kept
counts, projections/kept_counts.py), so the choice is made per request from them: walking
tests about (offset + limit) * flows / carriers flows if matches are spread evenly, fewer
when they come early, up to every flow when they come late (the estimate is the geometric
mean of even and last); starting from the tag tests, fetches and sorts each carrier. The
costs are measured on this machine: a flow walked ~0.46 µs, a carrier ~1.6 µs. PostgreSQL
plans with its own statistics and is not asked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Final

from events.contract.filters import FlowFilters, Operator

__all__ = ["DRIVING_TAG", "driving_tag", "required_tags", "starts_from_tag", "without_needles"]

# The bound parameter naming the tag a driven page starts from (projections/queries.py).
DRIVING_TAG: Final = "drive__tag"

# Microseconds per flow walked in sort order, and per carrier of the tag fetched and sorted.
_WALK_US: Final = 0.46
_CARRIER_US: Final = 1.6

# (count of live flows per asked tag, absent when none carries it; count of every live flow)
TagCounts = Callable[[list[str]], tuple[dict[str, int], int]]


def required_tags(filters: FlowFilters) -> list[str] | None:
    """The needles of `flows.tags.all_` when every flow the filter matches must carry them all
    (the criterion is ANDed with the rest), else None."""
    f = filters.flows
    if f is None or f.tags is None or not f.tags.all_:
        return None
    if f.operator == Operator.or_ and any(
        criterion is not None for criterion in (f.id, f.deployment, f.name)
    ):
        return None
    if f.tags.operator == Operator.or_ and f.tags.is_null_ is not None:
        return None
    return [str(tag) for tag in f.tags.all_]


def starts_from_tag(carriers: int, flows: int, limit: int, offset: int) -> bool:
    """Whether a page of `limit` after `offset` is cheaper found from a tag that `carriers` of
    `flows` flows carry than by walking the flows in sort order."""
    if carriers == 0:
        return flows > 0
    # Spread evenly, the page is full after `evenly` flows; sorted last, after every flow.
    # Which it is the counts cannot say (the benchmark's own flows sort before the seeded
    # ones, so its walk took twice the even estimate), so the two are hedged.
    evenly = min(flows, (offset + limit) * flows / carriers)
    return carriers * _CARRIER_US < math.sqrt(evenly * flows) * _WALK_US


def driving_tag(filters: FlowFilters, limit: int, offset: int, counts: TagCounts) -> str | None:
    """The tag a page of `filters` is best found from, or None to walk the flows in order."""
    needles = required_tags(filters)
    if needles is None:
        return None
    distinct = sorted(set(needles))
    carriers, flows = counts(distinct)
    rarest = min(distinct, key=lambda tag: carriers.get(tag, 0))
    if starts_from_tag(carriers.get(rarest, 0), flows, limit, offset):
        return rarest
    return None


def without_needles(filters: FlowFilters, tag: str) -> FlowFilters:
    """`filters` for a page started from `tag`'s rows: without `tags.all_` when `tag` is its
    only needle, since every flow started from then carries it (its per-flow check was a third
    of such a page's time), else as they are. Only for filters that require their tags."""
    needles = required_tags(filters)
    if needles is None or set(needles) != {tag}:
        return filters
    flows = filters.flows
    assert flows is not None and flows.tags is not None  # required_tags says so
    tags = flows.tags.model_copy(update={"all_": None})
    return dataclasses.replace(filters, flows=flows.model_copy(update={"tags": tags}))
