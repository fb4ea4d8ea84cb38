"""Handlers of the query subjects (`P.query.*`), answered from the read model, and of the audit
subjects (`P.audit.history`, `P.audit.events`), answered from the log itself.

A query first settles which model it reads: the live one once it has applied the position the
query must see (services/consistency.py), or, with `Flows-As-Of`, a model of the log as it was
then (projections/as_of.py). A query that must wait is answered later, outside the handler pool
(services/waiting.py), so waiting queries never hold the slots other requests need.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from events.contract import headers as h
from events.contract.bodies import load_json_body
from events.contract.replies import Reply, json_reply
from projections.log_points import parse_log_point
from projections.sqlite_reads import SQLiteBusy, SQLiteDocuments
from services.audit_reader import AuditReader
from services.failures import failure_reply
from services.started import Started
from services.waiting import Deferred, Handler

__all__ = ["QueryHandlers"]

RequestT = TypeVar("RequestT")
# Reads one model: the live one, or one as of a point in the log.
Connect = Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]]
# A query's answer: the reply's body, already JSON (projections/answers.py).
Answer = Callable[[AsyncConnection, RequestT], Awaitable[bytes]]
# The same answer read in place from the live SQLite model (projections/sqlite_reads.py).
AnswerNow = Callable[[SQLiteDocuments, RequestT], Awaitable[bytes]]


class QueryHandlers:
    def __init__(self, started: Callable[[], Started]) -> None:
        self._started = started

    def query(
        self,
        parse: Callable[[Any], RequestT],
        answer: Answer[RequestT],
        now: AnswerNow[RequestT] | None = None,
    ) -> Handler:
        """The handler of a read-model query: `parse` reads the body, `answer` the model;
        `now`, where given, answers from the live SQLite model on plain sqlite3."""

        async def run(connect: Connect, request: RequestT, as_of: int | None = None) -> Reply:
            async with connect() as conn:
                # An as-of answer says which position it was answered as of (a time resolves
                # to one).
                return Reply(200, await answer(conn, request), as_of)

        async def live(parts: Started, request: RequestT) -> Reply:
            if now is not None and parts.documents is not None:
                with contextlib.suppress(SQLiteBusy):
                    return Reply(200, await now(parts.documents, request))
            return await run(parts.engine.connect, request)

        async def handle(payload: bytes, headers: Mapping[str, str]) -> Reply | Deferred:
            try:
                parts = self._started()
                as_of = await _as_of_position(parts, headers)
                if as_of is not None:
                    # Read from the log, not the live model: no wait for the projector.
                    request = parse(load_json_body(payload))
                    if now is not None:
                        with contextlib.suppress(SQLiteBusy):
                            async with parts.as_of.documents(as_of) as documents:
                                return Reply(200, await now(documents, request), as_of)
                    return await run(lambda: parts.as_of.connect(as_of), request, as_of)
                positions = parts.positions
                wanted = await positions.wanted(headers)
                wait_ms = positions.wait_ms(headers)
                request = parse(load_json_body(payload))
                if wanted <= positions.applied:
                    return await live(parts, request)
            except Exception as error:
                return failure_reply(error, "query")

            async def after_wait() -> Reply:
                try:
                    await positions.wait_for(wanted, wait_ms)
                    return await live(parts, request)
                except Exception as error:
                    return failure_reply(error, "query")

            return Deferred(after_wait)

        return handle

    def audit(
        self,
        parse: Callable[[Any], RequestT],
        answer: Callable[[AuditReader, RequestT], Awaitable[Any]],
    ) -> Handler:
        """The handler of an audit request: `parse` reads the body, `answer` the log
        (services/audit_reader.py)."""

        async def handle(payload: bytes, headers: Mapping[str, str]) -> Reply:
            try:
                reader = self._started().audit
                request = parse(load_json_body(payload))
                return json_reply(200, await answer(reader, request))
            except Exception as error:
                return failure_reply(error, "audit")

        return handle


async def _as_of_position(parts: Started, headers: Mapping[str, str]) -> int | None:
    raw = h.as_of_text(headers)
    if raw is None:
        return None
    try:
        point = parse_log_point(raw)
    except ValueError as exc:
        raise h.header_error(h.AS_OF, "value_error", f"Value error, {exc}", raw) from None
    return await parts.as_of.resolve(point)
