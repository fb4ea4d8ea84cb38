"""Every nats-py error that reaches the JetStream log, whatever the call, leaves it as the log's
own LogUnavailable (events/jetstream_log.py is the one boundary), connecting included."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
import nats.js.errors
import pytest

from events.contract.errors import LogUnavailable
from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog, open_log
from events.log import AppendMessage

SUBJECTS = Subjects("u")


def _foreign_errors() -> list[type[BaseException]]:
    found: list[type[BaseException]] = [asyncio.TimeoutError]
    for module in (nats.errors, nats.js.errors):
        for _, error in inspect.getmembers(module, inspect.isclass):
            if issubclass(error, nats.errors.Error) and error not in found:
                found.append(error)
    return found


def _raise(error: type[BaseException]) -> BaseException:
    try:
        return error()
    except TypeError:  # the JetStream API errors take keyword fields, all optional or not
        return error.__new__(error)


class _FailingConnection:
    """A nats-py client whose every call fails with one error."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def new_inbox(self) -> str:
        return "_INBOX.x"

    def jetstream(self) -> _FailingConnection:
        return self

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, None]]:
        async def fail(*_args: object, **_kwargs: object) -> None:
            raise _raise(self.error)

        return fail


async def _first_page(log: JetStreamLog) -> None:
    async for _ in log.pages(0):
        return


async def _first_batch(log: JetStreamLog) -> None:
    async for _ in log.follow(0):
        return


CALLS: dict[str, Callable[[JetStreamLog], Coroutine[Any, Any, object]]] = {
    "append": lambda log: log.append([AppendMessage(SUBJECTS.event("a"), b"x", 0)]),
    "append-batch": lambda log: log.append(
        [AppendMessage(SUBJECTS.event("a"), b"x"), AppendMessage(SUBJECTS.name("n"), b"m")]
    ),
    "last": lambda log: log.last(SUBJECTS.event("a")),
    "first": lambda log: log.first(SUBJECTS.event("a")),
    "last_position": lambda log: log.last_position(),
    "read": lambda log: log.read(0, 10),
    "pages": _first_page,
    "follow": _first_batch,
}


@pytest.mark.parametrize("error", _foreign_errors(), ids=lambda error: error.__name__)
@pytest.mark.parametrize("call", list(CALLS), ids=str)
async def test_a_nats_error_leaves_the_log_as_log_unavailable(
    call: str, error: type[BaseException]
) -> None:
    log = JetStreamLog(_FailingConnection(error), SUBJECTS, "S", timeout_s=0.5)  # type: ignore[arg-type]
    with pytest.raises(LogUnavailable):
        await CALLS[call](log)


@pytest.mark.parametrize(
    "error",
    [nats.errors.NoServersError, ConnectionRefusedError, asyncio.TimeoutError],
    ids=lambda error: error.__name__,
)
async def test_a_connection_that_cannot_be_made_is_log_unavailable(
    error: type[BaseException],
) -> None:
    refusal = error("nats at 127.0.0.1:1 is not there")

    async def connect() -> Any:
        raise refusal

    with pytest.raises(LogUnavailable) as raised:
        async with open_log(connect, SUBJECTS, "S", 0.5):
            pass
    # The tools print it after "cannot read the event log": it says what it said before.
    assert str(raised.value) == str(refusal)


async def test_open_log_closes_its_connection() -> None:
    closed: list[bool] = []

    class Connection:
        async def close(self) -> None:
            closed.append(True)

    async def connect() -> Any:
        return Connection()

    async with open_log(connect, SUBJECTS, "S", 0.5) as log:
        assert isinstance(log, JetStreamLog)
    assert closed == [True]
