"""The contract's headers: their names, and how the service reads a request's headers.

A header the service cannot read gets a 422 in Prefect's shape with `loc ["header", <name>]`,
the same as a bad body field, so a client sees one kind of error for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from events.contract.errors import InvalidRequest

__all__ = [
    "AS_OF",
    "CONSISTENCY",
    "MIN_POSITION",
    "MSG_ID",
    "POSITION",
    "SERVICE_ERROR",
    "SERVICE_ERROR_CODE",
    "STATUS",
    "WAIT_MS",
    "Consistency",
    "as_of_text",
    "command_id",
    "consistency",
    "header_error",
    "non_negative_int",
]

Headers = Mapping[str, str]

# -- requests -------------------------------------------------------------------------------
MSG_ID = "Nats-Msg-Id"  # a command's id: a retry with the same id gets the same reply
MIN_POSITION = "Flows-Min-Position"  # a query waits until the read model has applied this
WAIT_MS = "Flows-Wait-Ms"  # ... for at most this long (default 5000, at most 60000)
CONSISTENCY = "Flows-Consistency"  # "linearizable" (default) or "eventual"
AS_OF = "Flows-As-Of"  # answer as of a log position or an ISO 8601 time
# -- replies --------------------------------------------------------------------------------
STATUS = "Flows-Status"  # the HTTP status Prefect would answer
POSITION = "Flows-Position"  # where a command's effect is visible (or the as-of position)
SERVICE_ERROR_CODE = "Nats-Service-Error-Code"  # errors only (NATS micro's convention)
SERVICE_ERROR = "Nats-Service-Error"  # errors only: one line

Consistency = Literal["linearizable", "eventual"]


def header_error(name: str, kind: str, message: str, raw: str, **ctx: Any) -> InvalidRequest:
    """Prefect's 422 for a header value the service cannot use."""
    error: dict[str, Any] = {"type": kind, "loc": ["header", name], "msg": message, "input": raw}
    if ctx:
        error["ctx"] = ctx
    return InvalidRequest([error], None)


def command_id(headers: Headers) -> str | None:
    return headers.get(MSG_ID) or None


def non_negative_int(headers: Headers, name: str, default: int) -> int:
    raw = headers.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise header_error(name, "int_parsing", "Input should be a valid non-negative integer", raw)
    return value


def consistency(headers: Headers) -> Consistency:
    raw = headers.get(CONSISTENCY)
    if raw is None or raw in {"", "linearizable"}:
        return "linearizable"
    if raw == "eventual":
        return "eventual"
    raise header_error(
        CONSISTENCY,
        "literal_error",
        "Input should be 'linearizable' or 'eventual'",
        raw,
        expected="'linearizable' or 'eventual'",
    )


def as_of_text(headers: Headers) -> str | None:
    """The `Flows-As-Of` value, or None for a query of the present."""
    raw = headers.get(AS_OF)
    return None if raw is None or raw.strip() == "" else raw
