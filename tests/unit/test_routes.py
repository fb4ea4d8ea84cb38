"""The route table answers exactly the contract's subjects, each with its own handler, and a
service that has not started answers every one of them 503 "starting" (no sockets)."""

from __future__ import annotations

from pathlib import Path

import orjson

from events.contract.headers import STATUS
from events.contract.subjects import AUDITS, COMMANDS, HEALTH, QUERIES, Subjects
from services.bootstrap import Service
from services.command_handlers import CommandHandlers
from services.query_handlers import QueryHandlers
from services.reply_policy import RefusedReplies
from services.routes import Route, route_table
from services.settings import Settings
from services.stats import HealthReporter
from services.waiting import Deferred


def routes(tmp_path: Path) -> tuple[tuple[Route, ...], Service]:
    service = Service(Settings(subject_prefix="p", data_dir=tmp_path))
    table = route_table(
        CommandHandlers(service.started),
        QueryHandlers(service.started),
        HealthReporter(service, RefusedReplies()),
        default_limit=200,
    )
    return table, service


async def test_every_subject_of_the_contract_has_one_route_and_no_other(tmp_path: Path) -> None:
    table, service = routes(tmp_path)
    subjects = Subjects("p")
    contract = (
        [subjects.command(name) for name in COMMANDS]
        + [subjects.query(name) for name in QUERIES]
        + [subjects.audit(name) for name in AUDITS + HEALTH]
    )
    assert [route.subject("p") for route in table] == contract
    assert [route.operation for route in table] == [*COMMANDS, *QUERIES, *AUDITS, *HEALTH]
    assert len({id(route.handler) for route in table}) == len(table)
    await service.engine.dispose()


async def test_before_start_up_every_request_subject_answers_503_starting(tmp_path: Path) -> None:
    table, service = routes(tmp_path)
    for route in table:
        if route.operation == "stats":
            continue  # the health report answers while starting: that is its job
        reply = await route.handler(b"{}", {})
        assert not isinstance(reply, Deferred)
        assert reply.headers()[STATUS] == "503", route.route
        assert orjson.loads(reply.body) == {"detail": "the flows service is starting"}
    await service.engine.dispose()
