"""The flows read queries: read, read by name, filter, count, paginate, bulk-delete selection.

Each takes an open `AsyncConnection`; the caller owns the engine and the transaction, so one
snapshot can serve a paginate's two statements. A flow comes back as a dict in Prefect's Flow
key order (`id, created, updated, name, tags, labels`) plus the read model's `version`;
`created` and `updated` are aware UTC datetimes, JSON formatting is the caller's job.

A filter's statement is built once per shape (`documents_query`, `count_query`;
projections/filter_params.py) and given each request's values when it runs: SQLAlchemy's
compiled cache then hits every time, and so does PostgreSQL's prepared statement;
projections/sqlite_reads.py runs the same statements on plain `sqlite3`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import BigInteger, Row, Select, Text, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from events.contract.filters import FlowFilter, FlowFilters, FlowSort
from events.contract.queries import FilterRequest, PaginateRequest
from projections.filter_params import ByShape, Described
from projections.filter_sql import (
    describe_filters,
    flow_order_by,
    flows_where,
    tags_only_count,
)
from projections.kept_counts import kept_count
from projections.tables import flow, flow_tag
from projections.tag_plan import DRIVING_TAG, without_needles

__all__ = [
    "Prepared",
    "count_flows",
    "count_query",
    "documents_query",
    "filter_flows",
    "paginate_flows",
    "read_flow",
    "read_flow_by_name",
    "select_flows_for_bulk_delete",
]

_COLUMNS: Final = (
    flow.c.id,
    flow.c.created,
    flow.c.updated,
    flow.c.name,
    flow.c.tags,
    flow.c.labels,
    flow.c.version,
)
# Both backends take OFFSET as a signed 64-bit integer; a larger (valid) offset is past any row.
_MAX_OFFSET: Final = 2**63 - 1
_LIMIT: Final = "page__limit"
_OFFSET: Final = "page__offset"
# Statements kept, one per query shape: a few KB each, and a client could make up endless
# shapes, so the least recently used go.
_CACHED_SHAPES: Final = 256


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement shared by every request of one shape (`key`), and this request's values."""

    key: Hashable
    statement: Select[Any]
    params: dict[str, Any]


# The statements built so far, by shape (the key names the dialect).
_STATEMENTS: ByShape[Select[Any]] = ByShape(_CACHED_SHAPES)


class _HasFilters(Protocol):
    @property
    def filters(self) -> FlowFilters: ...


def _flow(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "created": row.created,
        "updated": row.updated,
        "name": row.name,
        "tags": list(row.tags),
        "labels": row.labels,
        "version": int(row.version),
    }


def _canonical_id(flow_id: str | uuid.UUID) -> str | None:
    try:
        return str(flow_id if isinstance(flow_id, uuid.UUID) else uuid.UUID(flow_id))
    except ValueError:
        return None


async def read_flow(conn: AsyncConnection, flow_id: str | uuid.UUID) -> dict[str, Any] | None:
    """The flow with this id (any UUID spelling), or `None`."""
    canonical = _canonical_id(flow_id)
    if canonical is None:
        return None
    row = (await conn.execute(select(*_COLUMNS).where(flow.c.id == canonical))).first()
    return None if row is None else _flow(row)


async def read_document(conn: AsyncConnection, flow_id: str) -> bytes | None:
    """The reply bytes of the flow with this id (any UUID spelling), or `None`."""
    canonical = _canonical_id(flow_id)
    if canonical is None:
        return None
    return await _one_document(conn, _DOCUMENT_BY_ID, canonical)


async def read_document_by_name(conn: AsyncConnection, name: str) -> bytes | None:
    """The reply bytes of the flow with exactly this name, or `None`."""
    return await _one_document(conn, _DOCUMENT_BY_NAME, name)


# Built once: a statement object's cache key is computed once, so each read only looks it up.
_KEY: Final = "key"
_DOCUMENT_BY_ID: Final = select(flow.c.document).where(flow.c.id == bindparam(_KEY))
_DOCUMENT_BY_NAME: Final = select(flow.c.document).where(flow.c.name == bindparam(_KEY))


async def _one_document(conn: AsyncConnection, query: Select[Any], key: str) -> bytes | None:
    document = (await conn.execute(query, {_KEY: key})).scalar_one_or_none()
    return None if document is None else bytes(document)


async def filter_documents(conn: AsyncConnection, request: FilterRequest) -> list[bytes]:
    """`POST /flows/filter` as the flows' reply bytes, in the answer's order."""
    return await _read_documents(conn, request.filters, request.sort, request.limit, request.offset)


async def paginate_documents(
    conn: AsyncConnection, request: PaginateRequest
) -> tuple[list[bytes], int]:
    """`POST /flows/paginate`: one page of reply bytes, and how many flows match in all."""
    documents = await _read_documents(
        conn, request.filters, request.sort, request.limit, request.offset
    )
    return documents, await count_flows(conn, request)


async def _read_documents(
    conn: AsyncConnection, filters: FlowFilters, sort: FlowSort, limit: int, offset: int
) -> list[bytes]:
    query = documents_query(conn.dialect.name, filters, sort, limit, offset)
    if query is None:
        return []
    result = await conn.execute(query.statement, query.params)
    return [bytes(document) for document in result.scalars()]


def documents_query(
    dialect: str,
    filters: FlowFilters,
    sort: FlowSort,
    limit: int,
    offset: int,
    driving_tag: str | None = None,
) -> Prepared | None:
    """The documents of one page of matching flows, sorted; `None` when the page is empty
    whatever the model holds. With `driving_tag` (one of the filter's required `tags.all_`
    needles: projections/tag_plan.py) the flows are found from that tag's rows, then sorted."""
    return _page_query(dialect, filters, sort, limit, offset, (flow.c.document,), driving_tag)


def count_query(dialect: str, filters: FlowFilters) -> Prepared:
    """How many flows match `filters`: one row, one integer. The common shapes read a counter
    the projector keeps (projections/kept_counts.py), the others count rows."""
    described = describe_filters(filters)
    kept = kept_count(filters, described)
    if kept is not None:
        return Prepared(kept.key, kept.statement, kept.params)
    key = ("count", dialect, described.shape)
    return Prepared(
        key,
        _STATEMENTS.get(key, lambda: _count_statement(dialect, filters, described)),
        described.params,
    )


def _count_statement(dialect: str, filters: FlowFilters, described: Described) -> Select[Any]:
    fast = tags_only_count(filters, dialect, described)
    if fast is not None:
        return fast
    query = select(func.count()).select_from(flow)
    where = flows_where(filters, dialect, described)
    return query if where is None else query.where(where)


def _page_query(
    dialect: str,
    filters: FlowFilters,
    sort: FlowSort,
    limit: int,
    offset: int,
    columns: tuple[Any, ...],
    driving_tag: str | None = None,
) -> Prepared | None:
    if limit == 0 or offset > _MAX_OFFSET:
        return None
    if driving_tag is not None:
        filters = without_needles(filters, driving_tag)
    described = describe_filters(filters)
    driven = driving_tag is not None
    key = ("page", dialect, sort, columns, described.shape, driven)

    def build() -> Select[Any]:
        query = select(*columns)
        if driven:
            # The flows carrying the tag (one `flow_tag` row each), which every match does:
            # the same rows, found from the tag's rows instead of by walking the sort's index
            # (a join: ~15% less than `id IN (its flows)`).
            query = query.select_from(flow_tag.join(flow, flow.c.id == flow_tag.c.flow_id)).where(
                flow_tag.c.tag == bindparam(DRIVING_TAG, type_=Text)
            )
        where = flows_where(filters, dialect, described)
        if where is not None:
            query = query.where(where)
        return (
            query.order_by(*flow_order_by(sort))
            .limit(bindparam(_LIMIT, type_=BigInteger))
            .offset(bindparam(_OFFSET, type_=BigInteger))
        )

    params = {**described.params, _LIMIT: limit, _OFFSET: offset}
    if driving_tag is not None:
        params[DRIVING_TAG] = driving_tag
    return Prepared(key, _STATEMENTS.get(key, build), params)


async def read_flow_by_name(conn: AsyncConnection, name: str) -> dict[str, Any] | None:
    """The flow with exactly this name (case-sensitive, untrimmed), or `None`."""
    row = (await conn.execute(select(*_COLUMNS).where(flow.c.name == name))).first()
    return None if row is None else _flow(row)


async def _read_page(
    conn: AsyncConnection, filters: FlowFilters, sort: FlowSort, limit: int, offset: int
) -> list[dict[str, Any]]:
    query = _page_query(conn.dialect.name, filters, sort, limit, offset, _COLUMNS)
    if query is None:
        return []
    result = await conn.execute(query.statement, query.params)
    return [_flow(row) for row in result]


async def filter_flows(conn: AsyncConnection, request: FilterRequest) -> list[dict[str, Any]]:
    """`POST /flows/filter`: matching flows, sorted, then offset, then limited."""
    return await _read_page(conn, request.filters, request.sort, request.limit, request.offset)


async def count_flows(conn: AsyncConnection, request: _HasFilters) -> int:
    """`POST /flows/count`: how many flows match (any request carrying `filters`)."""
    query = count_query(conn.dialect.name, request.filters)
    return int((await conn.execute(query.statement, query.params)).scalar_one())


async def paginate_flows(conn: AsyncConnection, request: PaginateRequest) -> dict[str, Any]:
    """`POST /flows/paginate`: one page plus the total; `pages` is 0 when `limit` is 0."""
    results = await _read_page(conn, request.filters, request.sort, request.limit, request.offset)
    count = await count_flows(conn, request)
    pages = math.ceil(count / request.limit) if request.limit else 0
    return {
        "results": results,
        "count": count,
        "limit": request.limit,
        "pages": pages,
        "page": request.page,
    }


async def select_flows_for_bulk_delete(
    conn: AsyncConnection, flow_filter: FlowFilter | None, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` flows matching `flow_filter`, in name order (what bulk delete removes)."""
    filters = FlowFilters(flows=flow_filter)
    return await _read_page(conn, filters, FlowSort.NAME_ASC, limit, 0)
