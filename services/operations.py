"""The service's operations: parse a request, run it against the log or the read model, reply.

One method per subject of the contract. Every failure becomes an error reply in Prefect's
shapes here, because over real NATS an exception in a handler reaches nobody: the requester
would only see a timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.commands import parse_create, parse_delete, parse_update
from events.errors import (
    FlowNotFound,
    FlowsError,
    InvalidRequest,
    ReadModelBehind,
    ServiceUnavailable,
)
from events.model import flow_document
from events.records import StoredReply
from events.validation import load_json_body
from events.writer import CommandResult, FlowWriter
from projections import queries, requests
from projections.as_of import AsOfModels
from projections.as_of_position import parse_log_point
from projections.log_end import LogEnd
from projections.positions import PositionWatcher
from services.audit import AuditReader
from services.replies import Deferred, Reply, error_reply, json_reply

__all__ = ["FlowsOperations"]

log = logging.getLogger(__name__)

Headers = Mapping[str, str]
# Opens a connection to the model a query reads: the live one, or a scratch one as of a point.
Connect = Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]]
AS_OF_HEADER = "Flows-As-Of"
MIN_POSITION_HEADER = "Flows-Min-Position"
CONSISTENCY_HEADER = "Flows-Consistency"
_DEFAULT_WAIT_MS = 5000
_MAX_WAIT_MS = 60_000


class FlowsOperations:
    def __init__(
        self,
        writer: FlowWriter,
        engine: AsyncEngine,
        watcher: PositionWatcher,
        audit: AuditReader,
        log_end: LogEnd,
        default_limit: int = 200,
        as_of: AsOfModels | None = None,
    ) -> None:
        self._writer = writer
        self._engine = engine
        self._watcher = watcher
        self._log_end = log_end
        self._audit = audit
        self._default_limit = default_limit
        self._as_of = as_of
        # Highest position this process has answered a command with: a query waits for it,
        # so a query sent after a command's reply always sees the command (read-your-writes).
        self._answered_position = 0

    async def close(self) -> None:
        if self._as_of is not None:
            await self._as_of.close()

    def require_position(self, position: int) -> None:
        """Make queries wait for `position` (the log's end at start-up, so nothing stale is
        served while the projector catches up)."""
        self._answered_position = max(self._answered_position, position)

    # -- commands ----------------------------------------------------------------------------
    async def create(self, payload: bytes, headers: Headers) -> Reply:
        async def run(command_id: str | None) -> Reply:
            body = load_json_body(payload)
            command = parse_create(body)
            self._refuse_unstorable_text(body, command.name, command.tags)
            outcome = await self._writer.create(
                command.name, list(command.tags), command.labels, command_id
            )
            return self._outcome(outcome)

        return await self._command(headers, run)

    async def update(self, payload: bytes, headers: Headers) -> Reply:
        async def run(command_id: str | None) -> Reply:
            body = load_json_body(payload)
            command = parse_update(body)
            self._refuse_unstorable_text(body, None, command.tags)
            tags = None if command.tags is None else list(command.tags)
            outcome = await self._writer.update(command.id, tags, command_id)
            return self._outcome(outcome)

        return await self._command(headers, run)

    async def delete(self, payload: bytes, headers: Headers) -> Reply:
        async def run(command_id: str | None) -> Reply:
            command = parse_delete(load_json_body(payload))
            return self._outcome(await self._writer.delete(command.id, command_id))

        return await self._command(headers, run)

    async def bulk_delete(self, payload: bytes, headers: Headers) -> Reply:
        async def run(command_id: str | None) -> Reply:
            request = requests.parse_bulk_delete_request(load_json_body(payload))
            await self._wait(self._answered_position, _DEFAULT_WAIT_MS)
            async with self._engine.connect() as conn:
                rows = await queries.select_flows_for_bulk_delete(
                    conn, request.flows, request.limit
                )
            ids = [str(row["id"]) for row in rows]
            return self._outcome(await self._writer.delete_many(ids, command_id))

        return await self._command(headers, run)

    async def _command(
        self, headers: Headers, run: Callable[[str | None], Awaitable[Reply]]
    ) -> Reply:
        command_id = headers.get("Nats-Msg-Id") or None
        try:
            if command_id is not None:
                stored = await self._writer.stored_reply(command_id)
                if stored is not None:
                    return self._from_stored(stored)
            return await run(command_id)
        except FlowsError as error:
            # A refused command changed nothing; its position is what this instance has
            # answered so far, which a follow-up query may wait for like any other.
            return error_reply(error, self._answered_position)
        except Exception:
            return _internal_error("command", self._answered_position)

    def _refuse_unstorable_text(
        self, body: Any, name: str | None, tags: Sequence[str] | None
    ) -> None:
        requests.refuse_unstorable_text(self._engine.dialect.name, body, name, tags)

    def _outcome(self, outcome: CommandResult | StoredReply) -> Reply:
        if isinstance(outcome, StoredReply):
            return self._from_stored(outcome)
        return self._answered(outcome)

    def _answered(self, outcome: CommandResult) -> Reply:
        self._note_answered(outcome.position)
        return json_reply(outcome.status, outcome.body, outcome.position)

    def _from_stored(self, stored: StoredReply) -> Reply:
        position = stored.position or 0
        self._note_answered(position)
        return json_reply(stored.status, stored.body, position)

    def _note_answered(self, position: int) -> None:
        self._answered_position = max(self._answered_position, position)
        self._log_end.saw(position)

    # -- queries -----------------------------------------------------------------------------
    async def read(self, payload: bytes, headers: Headers) -> Reply | Deferred:
        async def run(connect: Connect) -> Reply:
            flow_id = requests.parse_read_request(load_json_body(payload))
            return await _one_flow(connect, queries.read_flow, flow_id)

        return await self._query(headers, run)

    async def read_by_name(self, payload: bytes, headers: Headers) -> Reply | Deferred:
        async def run(connect: Connect) -> Reply:
            name = requests.parse_read_by_name_request(load_json_body(payload))
            return await _one_flow(connect, queries.read_flow_by_name, name)

        return await self._query(headers, run)

    async def filter(self, payload: bytes, headers: Headers) -> Reply | Deferred:
        async def run(connect: Connect) -> Reply:
            request = requests.parse_filter_request(
                load_json_body(payload), max_limit=self._default_limit
            )
            async with connect() as conn:
                rows = await queries.filter_flows(conn, request)
            return json_reply(200, [_document(row) for row in rows])

        return await self._query(headers, run)

    async def count(self, payload: bytes, headers: Headers) -> Reply | Deferred:
        async def run(connect: Connect) -> Reply:
            request = requests.parse_count_request(load_json_body(payload))
            async with connect() as conn:
                return json_reply(200, await queries.count_flows(conn, request))

        return await self._query(headers, run)

    async def paginate(self, payload: bytes, headers: Headers) -> Reply | Deferred:
        async def run(connect: Connect) -> Reply:
            request = requests.parse_paginate_request(
                load_json_body(payload), max_limit=self._default_limit
            )
            async with connect() as conn:
                page = await queries.paginate_flows(conn, request)
            page = {**page, "results": [_document(row) for row in page["results"]]}
            return json_reply(200, page)

        return await self._query(headers, run)

    async def _query(
        self, headers: Headers, run: Callable[[Connect], Awaitable[Reply]]
    ) -> Reply | Deferred:
        try:
            as_of = await self._as_of_position(headers)
            if as_of is not None:
                # Read from the log, not the live model: no wait for the projector.
                reply = await run(lambda: self._as_of_models().connect(as_of))
                # The position answered as of (a time resolves to one): say which.
                return dataclasses.replace(reply, position=as_of)
            wanted = await self._wanted_position(headers)
            wait_ms = min(_header_int(headers, "Flows-Wait-Ms", _DEFAULT_WAIT_MS), _MAX_WAIT_MS)
            if wanted <= self._watcher.position:
                return await run(self._engine.connect)
        except Exception as error:
            return _query_failure(error)
        return Deferred(lambda: self._query_after_wait(wanted, wait_ms, run))

    async def _query_after_wait(
        self, wanted: int, wait_ms: int, run: Callable[[Connect], Awaitable[Reply]]
    ) -> Reply:
        try:
            await self._wait(wanted, wait_ms)
            return await run(self._engine.connect)
        except Exception as error:
            return _query_failure(error)

    async def _wanted_position(self, headers: Headers) -> int:
        """The position a query waits for before it reads the model.

        - Linearizable (the default): the log's end as JetStream reports it at the query's
          arrival, so a query sees every command acknowledged before it was sent, by any
          instance (etcd's "read index": one look-up serves every query that arrived while it
          was under way, projections/log_end.py). `Flows-Consistency: eventual` skips it.
        - The client's `Flows-Min-Position` (its session's own writes), and anything this
          instance has answered a command with (read-your-writes on one instance).
        A client's position beyond the log's end was handed out by no command, and waiting for
        it could only run out: it is refused at once (422).
        """
        asked = _header_int(headers, MIN_POSITION_HEADER, 0)
        linearizable = _linearizable(headers)
        self._log_end.saw(self._watcher.position)
        wanted = max(asked, self._answered_position)
        if linearizable or asked > self._log_end.known:
            end = await self._log_end.fresh()
            if asked > end:
                raise InvalidRequest(
                    [
                        {
                            "type": "less_than_equal",
                            "loc": ["header", MIN_POSITION_HEADER],
                            "msg": (
                                f"Input should be less than or equal to {end}, the event log's "
                                "last position (use a Flows-Position a command reply carried)"
                            ),
                            "input": headers[MIN_POSITION_HEADER],
                            "ctx": {"le": end},
                        }
                    ],
                    None,
                )
            if linearizable:
                wanted = max(wanted, end)
        return wanted

    def _as_of_models(self) -> AsOfModels:
        if self._as_of is None:
            raise ServiceUnavailable("this service instance does not answer Flows-As-Of queries")
        return self._as_of

    async def _as_of_position(self, headers: Headers) -> int | None:
        raw = headers.get(AS_OF_HEADER)
        if raw is None or raw.strip() == "":
            return None
        try:
            point = parse_log_point(raw)
        except ValueError as exc:
            raise InvalidRequest(
                [
                    {
                        "type": "value_error",
                        "loc": ["header", AS_OF_HEADER],
                        "msg": f"Value error, {exc}",
                        "input": raw,
                    }
                ],
                None,
            ) from None
        return await self._as_of_models().resolve(point)

    async def _wait(self, position: int, wait_ms: int) -> None:
        if not await self._watcher.wait_for(position, wait_ms / 1000):
            raise ReadModelBehind(
                f"the read model has applied the log up to position {self._watcher.position}, "
                f"not yet {position}, after waiting {wait_ms} ms; retry, or raise Flows-Wait-Ms"
            )

    # -- audit -------------------------------------------------------------------------------
    async def history(self, payload: bytes, headers: Headers) -> Reply:
        async def run() -> Reply:
            return json_reply(200, await self._audit.history(load_json_body(payload)))

        return await self._audited(run)

    async def events(self, payload: bytes, headers: Headers) -> Reply:
        async def run() -> Reply:
            return json_reply(200, await self._audit.events(load_json_body(payload)))

        return await self._audited(run)

    async def _audited(self, run: Callable[[], Awaitable[Reply]]) -> Reply:
        try:
            return await run()
        except FlowsError as error:
            return error_reply(error)
        except Exception:
            return _internal_error("audit")


async def _one_flow(
    connect: Connect,
    lookup: Callable[[AsyncConnection, str], Awaitable[Mapping[str, Any] | None]],
    key: str,
) -> Reply:
    async with connect() as conn:
        row = await lookup(conn, key)
    if row is None:
        raise FlowNotFound()
    return json_reply(200, _document(row))


def _document(row: Mapping[str, Any]) -> dict[str, Any]:
    return flow_document(
        str(row["id"]), row["created"], row["updated"], row["name"], row["tags"], row["labels"]
    )


def _linearizable(headers: Headers) -> bool:
    """`Flows-Consistency`: "linearizable" (the default) or "eventual"."""
    raw = headers.get(CONSISTENCY_HEADER)
    if raw is None or raw in {"", "linearizable"}:
        return True
    if raw == "eventual":
        return False
    raise InvalidRequest(
        [
            {
                "type": "literal_error",
                "loc": ["header", CONSISTENCY_HEADER],
                "msg": "Input should be 'linearizable' or 'eventual'",
                "input": raw,
                "ctx": {"expected": "'linearizable' or 'eventual'"},
            }
        ],
        None,
    )


def _header_int(headers: Headers, name: str, default: int) -> int:
    raw = headers.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidRequest(
            [
                {
                    "type": "int_parsing",
                    "loc": ["header", name],
                    "msg": "Input should be a valid non-negative integer",
                    "input": raw,
                }
            ],
            None,
        )
    return value


def _query_failure(error: Exception) -> Reply:
    """The error reply of a query that raised `error` (call it inside the `except`)."""
    if isinstance(error, FlowsError):
        return error_reply(error)
    if isinstance(error, SQLAlchemyError):
        log.exception("the read model failed a query")
        return error_reply(ServiceUnavailable("the read model could not answer now; retry shortly"))
    return _internal_error("query")


def _internal_error(kind: str, position: int | None = None) -> Reply:
    log.exception("unexpected failure while answering a %s", kind)
    error = FlowsError(f"internal error while answering the {kind}; see the service's log")
    return error_reply(error, position)
