"""Handlers of the command subjects (`P.cmd.*`): parse the body into a command value, run it
through the writer (events/writer.py), reply with its result and position.

A command's position is what a follow-up query waits for on this instance (read-your-writes);
a refused command changed nothing, and its reply carries what this instance has answered so
far, which a follow-up query may wait for like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from events.contract import headers as h
from events.contract.bodies import load_json_body
from events.contract.commands import Command, CreateFlow, DeleteFlows, UpdateFlow
from events.contract.queries import parse_bulk_delete_request, refuse_unstorable_text
from events.contract.replies import Reply, json_reply
from projections import queries
from projections.dialect import dialect_of
from services.consistency import DEFAULT_WAIT_MS
from services.failures import failure_reply
from services.started import Started
from services.waiting import Handler

__all__ = ["CommandHandlers"]


class CommandHandlers:
    def __init__(self, started: Callable[[], Started]) -> None:
        self._started = started

    def command(self, parse: Callable[[Any], Command]) -> Handler:
        """The handler of a command whose body alone says what to do."""

        async def handle(payload: bytes, headers: Mapping[str, str]) -> Reply:
            parts: Started | None = None
            try:
                parts = self._started()
                body = load_json_body(payload)
                command = parse(body)
                _refuse_unstorable_text(parts, body, command)
                return await self._execute(parts, command, headers)
            except Exception as error:
                return failure_reply(error, "command", _answered(parts))

        return handle

    async def bulk_delete(self, payload: bytes, headers: Mapping[str, str]) -> Reply:
        """Deletes the flows a filter selects in the read model, as of every command this
        instance answered before it: the selection is a query, the deletion a command."""
        parts: Started | None = None
        try:
            parts = self._started()
            request = parse_bulk_delete_request(load_json_body(payload))
            positions = parts.positions
            await positions.wait_for(positions.answered, DEFAULT_WAIT_MS)
            async with parts.engine.connect() as conn:
                rows = await queries.select_flows_for_bulk_delete(
                    conn, request.flows, request.limit
                )
            command = DeleteFlows(flow_ids=tuple(str(row["id"]) for row in rows))
            return await self._execute(parts, command, headers)
        except Exception as error:
            return failure_reply(error, "command", _answered(parts))

    async def _execute(self, parts: Started, command: Command, headers: Mapping[str, str]) -> Reply:
        result = await parts.writer.execute(command, h.command_id(headers))
        parts.positions.answered_command(result.position)
        return json_reply(result.status, result.body, result.position)


def _answered(parts: Started | None) -> int | None:
    return None if parts is None else parts.positions.answered


def _refuse_unstorable_text(parts: Started, body: Any, command: Command) -> None:
    if isinstance(command, CreateFlow):
        refuse_unstorable_text(
            dialect_of(parts.engine).stores_nul, body, command.name, command.tags
        )
    elif isinstance(command, UpdateFlow):
        refuse_unstorable_text(dialect_of(parts.engine).stores_nul, body, None, command.tags)
