"""The queries' answers, as the bytes a reply carries (Prefect's JSON): one function per query
subject, each taking an open connection to a read model (the live one or an as-of one) and a
parsed request. Flows are answered with the documents the projector stored with them
(`flow.document`), so no row becomes a Python object on the way out."""

from __future__ import annotations

import math

from sqlalchemy.ext.asyncio import AsyncConnection

from events import jsoncodec
from events.contract.errors import FlowNotFound
from events.contract.queries import CountRequest, FilterRequest, PaginateRequest
from projections import queries
from projections.sqlite_reads import SQLiteDocuments
from projections.tag_plan import driving_tag

_SQLITE = "sqlite"

__all__ = [
    "count",
    "count_now",
    "filter",
    "filter_now",
    "paginate",
    "paginate_now",
    "read",
    "read_by_name",
    "read_by_name_now",
    "read_now",
]


async def read(conn: AsyncConnection, flow_id: str) -> bytes:
    return _found(await queries.read_document(conn, flow_id))


async def read_by_name(conn: AsyncConnection, name: str) -> bytes:
    return _found(await queries.read_document_by_name(conn, name))


async def filter(conn: AsyncConnection, request: FilterRequest) -> bytes:
    return _array(await queries.filter_documents(conn, request))


async def count(conn: AsyncConnection, request: CountRequest) -> bytes:
    return jsoncodec.dumps(await queries.count_flows(conn, request))


async def paginate(conn: AsyncConnection, request: PaginateRequest) -> bytes:
    """Prefect's page: `{results, count, limit, pages, page}`; `pages` is 0 when `limit` is."""
    documents, total = await queries.paginate_documents(conn, request)
    return _page(request, documents, total)


# The same answers from the live SQLite model on plain sqlite3 (projections/sqlite_reads.py;
# SQLiteBusy sends the caller back to the ones above).
async def read_now(documents: SQLiteDocuments, flow_id: str) -> bytes:
    return _found(documents.by_id(flow_id))


async def read_by_name_now(documents: SQLiteDocuments, name: str) -> bytes:
    return _found(documents.by_name(name))


async def filter_now(documents: SQLiteDocuments, request: FilterRequest) -> bytes:
    query = _documents_query(documents, request)
    return _array([] if query is None else await documents.documents(query))


async def count_now(documents: SQLiteDocuments, request: CountRequest) -> bytes:
    return jsoncodec.dumps(await documents.count(queries.count_query(_SQLITE, request.filters)))


async def paginate_now(documents: SQLiteDocuments, request: PaginateRequest) -> bytes:
    query = _documents_query(documents, request)
    total = queries.count_query(_SQLITE, request.filters)
    return _page(request, *await documents.page(query, total))


def _documents_query(
    documents: SQLiteDocuments, request: FilterRequest | PaginateRequest
) -> queries.Prepared | None:
    """The page's statement, found from a tag when the kept counts say that is cheaper."""
    if request.limit == 0:
        return None
    start = driving_tag(request.filters, request.limit, request.offset, documents.tag_counts)
    return queries.documents_query(
        _SQLITE, request.filters, request.sort, request.limit, request.offset, start
    )


def _page(request: PaginateRequest, documents: list[bytes], total: int) -> bytes:
    pages = math.ceil(total / request.limit) if request.limit else 0
    rest = {"count": total, "limit": request.limit, "pages": pages, "page": request.page}
    # `{"results":[...],` then the rest of the object, exactly as one dumps would write it.
    return b'{"results":' + _array(documents) + b"," + jsoncodec.dumps(rest)[1:]


def _found(document: bytes | None) -> bytes:
    if document is None:
        raise FlowNotFound()
    return document


def _array(documents: list[bytes]) -> bytes:
    return b"[" + b",".join(documents) + b"]"
