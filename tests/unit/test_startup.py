"""Start-up's wait for a dependency (services/startup.py) and its reading of database errors
(services/database_readiness.py), without sockets: attempts are scripted."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy.exc import DBAPIError

from services.database_readiness import diagnose_database
from services.startup import StartupFailed, wait_for


class NotYet(Exception):
    pass


def scripted(*outcomes: Exception | str) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An attempt that raises or returns the outcomes in turn; and its call count."""
    calls = [0]

    async def attempt() -> str:
        outcome = outcomes[min(calls[0], len(outcomes) - 1)]
        calls[0] += 1
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return attempt, calls


async def not_yet(error: Exception) -> str | None:
    return f"not yet: {error}" if isinstance(error, NotYet) else None


async def test_a_diagnosed_failure_is_retried_until_it_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempt, calls = scripted(NotYet("one"), NotYet("one"), NotYet("two"), "done")
    with caplog.at_level(logging.INFO, logger="services.startup"):
        assert await wait_for("the thing", attempt, not_yet, timeout_s=10) == "done"
    assert calls[0] == 4
    lines = [record.getMessage() for record in caplog.records]
    # Said once per reason (not once per attempt), then that it is ready.
    assert [line.split(" (retrying")[0] for line in lines[:-1]] == [
        "waiting for the thing: not yet: one",
        "waiting for the thing: not yet: two",
    ]
    assert "FLOWS_STARTUP_TIMEOUT_S" in lines[0]
    assert lines[-1].startswith("the thing is ready, after")


async def test_it_gives_up_after_the_timeout_with_the_last_reason() -> None:
    attempt, calls = scripted(NotYet("still forming"))
    with pytest.raises(StartupFailed) as failed:
        await wait_for("JetStream", attempt, not_yet, timeout_s=0.3)
    assert str(failed.value) == (
        "gave up waiting for JetStream after 0.3s (FLOWS_STARTUP_TIMEOUT_S): not yet: still forming"
    )
    assert calls[0] >= 2  # it did retry


async def test_a_failure_it_cannot_explain_is_raised_at_once() -> None:
    attempt, calls = scripted(ValueError("stream exists with other settings"))
    with pytest.raises(ValueError, match="other settings"):
        await wait_for("JetStream", attempt, not_yet, timeout_s=10)
    assert calls[0] == 1


class PgError(Exception):
    """Stands in for SQLAlchemy's adapted asyncpg error, which carries the SQLSTATE."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def db_error(sqlstate: str, message: str) -> DBAPIError:
    return DBAPIError("SELECT 1", None, PgError(sqlstate, message))


WHERE = "postgresql+asyncpg://flows:***@db:5432/flows"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), "nothing accepts connections at"),
        (db_error("57P03", "the database system is starting up"), "is not ready"),
        (db_error("53300", "too many connections"), "is not ready"),
        (db_error("08006", "connection failure"), "is not ready"),
    ],
)
async def test_a_database_not_ready_yet_is_waited_out(error: Exception, reason: str) -> None:
    said = await diagnose_database(error, WHERE)
    assert said is not None and reason in said and WHERE in said


@pytest.mark.parametrize(
    ("error", "refusal"),
    [
        (db_error("28P01", 'password authentication failed for user "flows"'), "credentials"),
        (db_error("28000", 'role "flows" does not exist'), "credentials"),
        (db_error("3D000", 'database "flows" does not exist'), "no such database"),
    ],
)
async def test_a_refusal_stops_start_up_at_once(error: Exception, refusal: str) -> None:
    with pytest.raises(StartupFailed, match=refusal) as failed:
        await diagnose_database(error, WHERE)
    assert "FLOWS_DATABASE_URL" in str(failed.value)


async def test_other_database_errors_are_not_waited_out() -> None:
    assert await diagnose_database(db_error("42P07", "relation exists"), WHERE) is None
    assert await diagnose_database(RuntimeError("a bug"), WHERE) is None
