"""Counts answered from the counters the projector keeps, not by walking the flows.

Two shapes are answered so, the common ones: a count of every flow, and a count of the flows
carrying one tag. Every other filter goes down the general path (projections/queries.py).

"Every flow" is what the SQL path would make of the filter, not how it is spelled: any filter
for which `flows_where` selects no condition at all (no groups; `flows: {}`; criteria that add
nothing, as `tags: {}`, `all_: []`, `like_: ""`; an `or_` made TRUE by an empty sub-filter).
A present cross-entity group (`deployments: {}`, `flow_runs: {}`, ...) is never empty: it asks
for a related row. "One tag" is `flows.tags.all_` naming one distinct tag and no other
criterion anywhere: exactly the flows having that tag's `flow_tag` row, which
`flow_tag_count` counts.

The counters are rows of the model itself, written in the transaction of the batch they count,
so any read of the model (a snapshot, an as-of model of the same schema) sees counts agreeing
with its flows.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import BigInteger, Select, Text, bindparam, func, literal, select

from events.contract.filters import FlowFilters
from projections.filter_params import ByShape, Described
from projections.filter_sql import flows_where, tags_all_only
from projections.tables import flow_count, flow_tag_count

__all__ = ["KeptCount", "kept_count"]

TAG: Final = "kept__tag"

_ZERO = literal(0, BigInteger)
# A missing row is a count of 0: no flow was ever folded, or no live flow carries the tag.
_EVERY_FLOW: Final = select(func.coalesce(select(flow_count.c.flows).scalar_subquery(), _ZERO))
_ONE_TAG: Final = select(
    func.coalesce(
        select(flow_tag_count.c.flows)
        .where(flow_tag_count.c.tag == bindparam(TAG, type_=Text))
        .scalar_subquery(),
        _ZERO,
    )
)


@dataclass(frozen=True, slots=True)
class KeptCount:
    """The counter statement that answers a count, and this request's values for it."""

    key: Hashable  # the statement's, for the caches of compiled statements
    statement: Select[Any]
    params: dict[str, Any]


def kept_count(filters: FlowFilters, described: Described) -> KeptCount | None:
    """The counter read answering a count of `filters`; None when only the SQL path can.
    `described` is `describe_filters(filters)`."""
    kind = _KINDS.get(described.shape, lambda: _kind(filters))
    if kind == "every flow":
        return KeptCount(("kept-count", kind), _EVERY_FLOW, {})
    if kind == "one tag":
        tags = tags_all_only(filters)
        assert tags
        return KeptCount(("kept-count", kind), _ONE_TAG, {TAG: tags[0]})
    return None


def _kind(filters: FlowFilters) -> str | None:
    # The dialect does not decide whether a condition is made, only how it is written.
    if flows_where(filters, "sqlite") is None:
        return "every flow"
    tags = tags_all_only(filters)
    return "one tag" if tags is not None and len(set(tags)) == 1 else None


# A filter's kind depends only on its shape (what the SQL looks like): worked out once a shape.
_KINDS: ByShape[str | None] = ByShape(256)
