"""The flows read queries: read, read by name, filter, count, paginate, bulk-delete selection.

Each takes an open `AsyncConnection`; the caller owns the engine and the transaction, so one
snapshot can serve a paginate's two statements. A flow comes back as a dict in Prefect's Flow key
order (`id, created, updated, name, tags, labels`) plus the read model's `version`; `created` and
`updated` are aware UTC datetimes, JSON formatting is the caller's job.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Final, Protocol

from sqlalchemy import Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from events.contract.filters import FlowFilter, FlowFilters, FlowSort
from events.contract.queries import FilterRequest, PaginateRequest
from projections.filter_sql import (
    flow_filter_where,
    flow_order_by,
    flows_where,
    tags_only_count,
)
from projections.tables import flow

__all__ = [
    "count_flows",
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
    return await _one_document(conn, flow.c.id == canonical)


async def read_document_by_name(conn: AsyncConnection, name: str) -> bytes | None:
    """The reply bytes of the flow with exactly this name, or `None`."""
    return await _one_document(conn, flow.c.name == name)


async def _one_document(conn: AsyncConnection, where: Any) -> bytes | None:
    document = (await conn.execute(select(flow.c.document).where(where))).scalar_one_or_none()
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
    if limit == 0 or offset > _MAX_OFFSET:
        return []
    query = _flows_query(conn, filters, sort, limit, offset).with_only_columns(flow.c.document)
    return [bytes(document) for document in (await conn.execute(query)).scalars()]


async def read_flow_by_name(conn: AsyncConnection, name: str) -> dict[str, Any] | None:
    """The flow with exactly this name (case-sensitive, untrimmed), or `None`."""
    row = (await conn.execute(select(*_COLUMNS).where(flow.c.name == name))).first()
    return None if row is None else _flow(row)


def _flows_query(
    conn: AsyncConnection, filters: FlowFilters, sort: FlowSort, limit: int, offset: int
) -> Select[Any]:
    query = select(*_COLUMNS)
    where = flows_where(filters, conn.dialect.name)
    if where is not None:
        query = query.where(where)
    return query.order_by(*flow_order_by(sort)).limit(limit).offset(offset)


async def _read_page(
    conn: AsyncConnection, filters: FlowFilters, sort: FlowSort, limit: int, offset: int
) -> list[dict[str, Any]]:
    if limit == 0 or offset > _MAX_OFFSET:
        return []
    result = await conn.execute(_flows_query(conn, filters, sort, limit, offset))
    return [_flow(row) for row in result]


async def filter_flows(conn: AsyncConnection, request: FilterRequest) -> list[dict[str, Any]]:
    """`POST /flows/filter`: matching flows, sorted, then offset, then limited."""
    return await _read_page(conn, request.filters, request.sort, request.limit, request.offset)


async def count_flows(conn: AsyncConnection, request: _HasFilters) -> int:
    """`POST /flows/count`: how many flows match (any request carrying `filters`)."""
    fast = tags_only_count(request.filters, conn.dialect.name)
    if fast is not None:
        return int((await conn.execute(fast)).scalar_one())
    query = select(func.count()).select_from(flow)
    where = flows_where(request.filters, conn.dialect.name)
    if where is not None:
        query = query.where(where)
    return int((await conn.execute(query)).scalar_one())


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
    query = select(*_COLUMNS)
    where = flow_filter_where(flow_filter, conn.dialect.name)
    if where is not None:
        query = query.where(where)
    query = query.order_by(*flow_order_by(FlowSort.NAME_ASC)).limit(limit)
    return [_flow(row) for row in await conn.execute(query)]
