"""The queries' answers, as Prefect's JSON bodies: one function per query subject, each taking
an open connection to a read model (the live one or an as-of one) and a parsed request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from events.contract.errors import FlowNotFound
from events.contract.queries import CountRequest, FilterRequest, PaginateRequest
from events.model import flow_document
from projections import queries

__all__ = ["count", "filter", "paginate", "read", "read_by_name"]


async def read(conn: AsyncConnection, flow_id: str) -> dict[str, Any]:
    return _found(await queries.read_flow(conn, flow_id))


async def read_by_name(conn: AsyncConnection, name: str) -> dict[str, Any]:
    return _found(await queries.read_flow_by_name(conn, name))


async def filter(conn: AsyncConnection, request: FilterRequest) -> list[dict[str, Any]]:
    return [_document(row) for row in await queries.filter_flows(conn, request)]


async def count(conn: AsyncConnection, request: CountRequest) -> int:
    return await queries.count_flows(conn, request)


async def paginate(conn: AsyncConnection, request: PaginateRequest) -> dict[str, Any]:
    page = await queries.paginate_flows(conn, request)
    return {**page, "results": [_document(row) for row in page["results"]]}


def _found(row: Mapping[str, Any] | None) -> dict[str, Any]:
    if row is None:
        raise FlowNotFound()
    return _document(row)


def _document(row: Mapping[str, Any]) -> dict[str, Any]:
    return flow_document(
        str(row["id"]), row["created"], row["updated"], row["name"], row["tags"], row["labels"]
    )
