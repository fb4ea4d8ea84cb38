"""The route table: every subject of the contract (CONTRACT.md) and the handler that answers it,
top to bottom. A subject is `<FLOWS_SUBJECT_PREFIX>.<route>`, e.g. `flows.cmd.update`.

Commands are parsed into command values (events/contract/commands.py) and run by the writer
(events/writer.py); queries are parsed (events/contract/queries.py) and answered from the read
model (projections/answers.py); audit reads the log (services/audit_reader.py); stats is the health
report (services/stats.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from events.contract.audit import parse_events, parse_history
from events.contract.commands import parse_create, parse_delete, parse_update
from events.contract.queries import parse_count_request as parse_count
from events.contract.queries import parse_filter_request as parse_filter
from events.contract.queries import parse_paginate_request as parse_paginate
from events.contract.queries import parse_read_by_name_request as parse_read_by_name
from events.contract.queries import parse_read_request as parse_read
from projections import answers
from services.audit_reader import AuditReader
from services.command_handlers import CommandHandlers
from services.query_handlers import QueryHandlers
from services.stats import HealthReporter
from services.waiting import Handler

__all__ = ["Route", "route_table"]


@dataclass(frozen=True, slots=True)
class Route:
    route: str  # the subject after the prefix: "cmd.create"
    handler: Handler

    @property
    def operation(self) -> str:
        """The operation's name (discovery endpoints, metrics, AsyncAPI): "create"."""
        return self.route.split(".", 1)[1]

    def subject(self, prefix: str) -> str:
        return f"{prefix}.{self.route}"


def route_table(
    commands: CommandHandlers, queries: QueryHandlers, health: HealthReporter, default_limit: int
) -> tuple[Route, ...]:
    # Filter and paginate cap `limit` at FLOWS_DEFAULT_LIMIT, as Prefect at its default limit.
    filtered = partial(parse_filter, max_limit=default_limit)
    paged = partial(parse_paginate, max_limit=default_limit)
    return (
        Route("cmd.create", commands.command(parse_create)),
        Route("cmd.update", commands.command(parse_update)),
        Route("cmd.delete", commands.command(parse_delete)),
        Route("cmd.bulk_delete", commands.bulk_delete),
        Route("query.read", queries.query(parse_read, answers.read, answers.read_now)),
        Route(
            "query.read_by_name",
            queries.query(parse_read_by_name, answers.read_by_name, answers.read_by_name_now),
        ),
        Route("query.filter", queries.query(filtered, answers.filter, answers.filter_now)),
        Route("query.count", queries.query(parse_count, answers.count, answers.count_now)),
        Route("query.paginate", queries.query(paged, answers.paginate, answers.paginate_now)),
        Route("audit.history", queries.audit(parse_history, AuditReader.history)),
        Route("audit.events", queries.audit(parse_events, AuditReader.events)),
        Route("audit.stats", health.stats),
    )
