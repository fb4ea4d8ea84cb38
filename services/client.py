"""A small async client for the flows service's request-reply contract (CONTRACT.md).

Every operation sends the Prefect-shaped JSON body on `P.<kind>.<operation>` and returns a
`Reply`; a non-2xx status is an ordinary reply, not an exception, unless the client was made
with `raise_errors=True` or the caller asks `reply.raise_for_status()`: then Prefect's answers
become typed exceptions (`FlowNotFound`, `ValidationError`, `Conflict`, `ServiceUnavailable`,
all `RequestFailed`). Transport failures always raise: `ServiceUnreachable` when nothing
answers, `BadReply` when something that is not a flows service does.

Session consistency (on by default, like MongoDB's causally consistent sessions): the client
remembers the highest `Flows-Position` any reply gave it and sends it as `Flows-Min-Position`
on every query, so a session reads its own writes whichever instance answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

import nats
import nats.errors
from nats.aio.client import Client

from events import jsoncodec
from events.contract import headers as h
from events.contract.headers import STATUS
from events.contract.replies import status_and_position
from services.nats_options import connect_options
from services.seeds import seed_urls
from services.settings import Settings, redact_url

__all__ = [
    "AsOf",
    "BadReply",
    "Conflict",
    "Filters",
    "FlowNotFound",
    "FlowsClient",
    "FlowsClientError",
    "Label",
    "QueryOptions",
    "ReadOptions",
    "Reply",
    "RequestFailed",
    "ServiceUnavailable",
    "ServiceUnreachable",
    "ValidationError",
]

Label = bool | int | float | str
# A point in the log's history for `as_of`: a log position, or a time (aware, or ISO 8601 text).
AsOf = int | datetime | str


class ReadOptions(TypedDict, total=False):
    """How a query reads: `min_position`/`wait_ms` wait for the read model to reach a log
    position (read-your-writes, see the contract); `as_of` answers as of an earlier log
    position or time, replayed from the log."""

    min_position: int
    wait_ms: int
    as_of: AsOf


class Filters(TypedDict, total=False):
    """The cross-entity filters of filter/count/paginate, in Prefect's JSON shapes."""

    flows: dict[str, Any]
    flow_runs: dict[str, Any]
    task_runs: dict[str, Any]
    deployments: dict[str, Any]
    work_pools: dict[str, Any]


CONNECT_TIMEOUT_S = 2
# Above the service's own waits (JetStream append, Flows-Wait-Ms default 5 s), so that a slow
# service answers 503 before the client gives up.
REQUEST_TIMEOUT_S = 10.0

# What a request meets when the connection to NATS is gone or going.
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
)


class FlowsClientError(Exception):
    """Base of the client's own errors."""


class QueryOptions(Filters, ReadOptions, total=False):
    """A filter, count or paginate's keyword arguments: the filters and how to read."""


def _split(options: QueryOptions) -> tuple[ReadOptions, Filters]:
    read: ReadOptions = {}
    filters: Filters = {}
    for key, value in options.items():
        target: Any = read if key in ReadOptions.__optional_keys__ else filters
        target[key] = value
    return read, filters


class ServiceUnreachable(FlowsClientError):
    """No flows service answered: broker down, no responders, timeout or lost connection."""


class BadReply(FlowsClientError):
    """Something answered that does not speak the flows contract."""


class RequestFailed(FlowsClientError):
    """Raised by `Reply.raise_for_status()` (and `iter_events`) for a non-2xx reply; the
    subclasses below mirror the answers Prefect's API gives."""

    def __init__(self, subject: str, reply: Reply) -> None:
        self.reply = reply
        self.status = reply.status
        self.detail: Any = reply.body.get("detail") if isinstance(reply.body, dict) else None
        super().__init__(f"{subject} answered {reply.status}: {_detail(reply.body)}")


class FlowNotFound(RequestFailed):
    """404: no live flow with that id or name."""


class ValidationError(RequestFailed):
    """422: the request failed validation; `errors` holds Prefect's pydantic errors (empty for
    the plain `{"detail": ...}` ones, such as an invalid limit)."""

    def __init__(self, subject: str, reply: Reply) -> None:
        super().__init__(subject, reply)
        body = reply.body if isinstance(reply.body, dict) else {}
        self.errors: list[dict[str, Any]] = list(body.get("exception_detail") or [])


class Conflict(RequestFailed):
    """409: the request conflicts with the state of the flows."""


class ServiceUnavailable(RequestFailed):
    """503: the service cannot do the work now (nothing was half-done); retry."""


_ERRORS_BY_STATUS: dict[int, type[RequestFailed]] = {
    404: FlowNotFound,
    409: Conflict,
    422: ValidationError,
    503: ServiceUnavailable,
}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    position: int | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def raise_for_status(self, subject: str = "the request") -> Self:
        if not self.ok:
            raise _ERRORS_BY_STATUS.get(self.status, RequestFailed)(subject, self)
        return self


class FlowsClient:
    """Request-reply over an already-connected nats-py client; `connect()` makes its own."""

    def __init__(
        self,
        nc: Client,
        subject_prefix: str = "flows",
        *,
        timeout: float = REQUEST_TIMEOUT_S,
        owns_connection: bool = False,
        session_consistency: bool = True,
        raise_errors: bool = False,
    ) -> None:
        self._nc = nc
        self._prefix = _checked_prefix(subject_prefix)
        self._timeout = timeout
        self._owns_connection = owns_connection
        self._session = session_consistency
        self._raise_errors = raise_errors
        # The highest log position a reply gave this client: its queries wait for it.
        self.position = 0

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        *,
        request_timeout: float = REQUEST_TIMEOUT_S,
        session_consistency: bool = True,
        raise_errors: bool = False,
    ) -> Self:
        """Connect for one short-lived use (the CLI): fail fast, never reconnect."""
        _checked_prefix(settings.subject_prefix)
        url = settings.nats_url
        causes: list[BaseException] = []

        async def remember(error: Exception) -> None:
            causes.append(error)

        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S * 2 + 1):
                nc = await nats.connect(
                    seed_urls(url),  # one URL or a cluster's seed list
                    connect_timeout=CONNECT_TIMEOUT_S,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,  # 0 would mean "retry forever" in nats-py
                    reconnect_time_wait=0,
                    error_cb=remember,
                    name="flows-client",
                    # The same authentication and TLS as the service's connections.
                    **connect_options(settings),
                )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            cause = causes[-1] if causes else exc
            raise ServiceUnreachable(
                f"cannot connect to NATS at {redact_url(url)} ({_describe(cause)}): start the "
                "service with `flows serve` (it starts an embedded nats-server when nothing runs "
                "on the default URL), or point --nats-url / FLOWS_NATS_URL at your NATS server"
            ) from exc
        return cls(
            nc,
            settings.subject_prefix,
            timeout=request_timeout,
            owns_connection=True,
            session_consistency=session_consistency,
            raise_errors=raise_errors,
        )

    async def close(self) -> None:
        if self._owns_connection and not self._nc.is_closed:
            await self._nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- commands -------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        *,
        tags: Sequence[str] | None = None,
        labels: Mapping[str, Label] | None = None,
        msg_id: str | None = None,
    ) -> Reply:
        body: dict[str, Any] = {"name": name}
        _put(body, tags=_list(tags), labels=_dict(labels))
        return await self.request("cmd.create", body, msg_id=msg_id)

    async def update(
        self, flow_id: str, *, tags: Sequence[str] | None = None, msg_id: str | None = None
    ) -> Reply:
        """`tags=None` leaves the tags alone (body `{id}`); `tags=[]` clears them."""
        body: dict[str, Any] = {"id": flow_id}
        _put(body, tags=_list(tags))
        return await self.request("cmd.update", body, msg_id=msg_id)

    async def delete(self, flow_id: str, *, msg_id: str | None = None) -> Reply:
        return await self.request("cmd.delete", {"id": flow_id}, msg_id=msg_id)

    async def bulk_delete(
        self,
        *,
        flows: dict[str, Any] | None = None,
        limit: int | None = None,
        msg_id: str | None = None,
    ) -> Reply:
        body: dict[str, Any] = {}
        _put(body, flows=flows, limit=limit)
        return await self.request("cmd.bulk_delete", body, msg_id=msg_id)

    # -- queries (`ReadOptions`: min_position / wait_ms / as_of) ---------------------------

    async def read(self, flow_id: str, **read: Unpack[ReadOptions]) -> Reply:
        return await self.request("query.read", {"id": flow_id}, **read)

    async def read_by_name(self, name: str, **read: Unpack[ReadOptions]) -> Reply:
        return await self.request("query.read_by_name", {"name": name}, **read)

    async def filter(
        self,
        *,
        limit: int | None = None,
        offset: int | None = None,
        sort: str | None = None,
        **options: Unpack[QueryOptions],
    ) -> Reply:
        read, filters = _split(options)
        body: dict[str, Any] = {}
        _put(body, limit=limit, offset=offset, sort=sort, **filters)
        return await self.request("query.filter", body, **read)

    async def count(self, **options: Unpack[QueryOptions]) -> Reply:
        read, filters = _split(options)
        body: dict[str, Any] = {}
        _put(body, **filters)
        return await self.request("query.count", body, **read)

    async def paginate(
        self,
        *,
        limit: int | None = None,
        page: int | None = None,
        sort: str | None = None,
        **options: Unpack[QueryOptions],
    ) -> Reply:
        read, filters = _split(options)
        body: dict[str, Any] = {}
        _put(body, limit=limit, page=page, sort=sort, **filters)
        return await self.request("query.paginate", body, **read)

    # -- audit (reads the log itself) ------------------------------------------------------

    async def history(self, flow_id: str) -> Reply:
        return await self.request("audit.history", {"id": flow_id})

    async def events(
        self,
        *,
        after: int = 0,
        limit: int | None = None,
        flow_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> Reply:
        body: dict[str, Any] = {"after": after}
        _put(body, limit=limit, flow_id=flow_id, types=_list(types))
        return await self.request("audit.events", body)

    async def iter_events(
        self,
        after: int = 0,
        page: int = 1000,
        flow_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every RecordedEvent with position > `after`, in log order, until an empty page.

        Raises `RequestFailed` if a page is answered with an error.
        """
        while True:
            reply = await self.events(after=after, limit=page, flow_id=flow_id, types=types)
            batch: list[dict[str, Any]] = reply.raise_for_status(self.subject("audit.events")).body
            if not batch:
                return
            for event in batch:
                yield event
            after = int(batch[-1]["position"])

    # -- the one request path -----------------------------------------------------------

    def subject(self, operation: str) -> str:
        return f"{self._prefix}.{operation}"

    async def request(
        self,
        operation: str,
        body: Any = None,
        *,
        msg_id: str | None = None,
        min_position: int | None = None,
        wait_ms: int | None = None,
        as_of: AsOf | None = None,
    ) -> Reply:
        """Send `body` (None: empty payload, which means `{}`) to `P.<operation>`."""
        subject = self.subject(operation)
        headers: dict[str, str] = {}
        if msg_id is not None:
            headers[h.MSG_ID] = msg_id
        if self._session and as_of is None and operation.startswith("query."):
            # The session's own writes first (an as-of answer reads the log, not the model).
            min_position = max(min_position or 0, self.position) or None
        if min_position is not None:
            headers[h.MIN_POSITION] = str(min_position)
        if as_of is not None:
            headers[h.AS_OF] = _as_of_text(as_of)
        timeout = self._timeout
        if wait_ms is not None:
            headers[h.WAIT_MS] = str(wait_ms)
            timeout = max(timeout, wait_ms / 1000 + 2)
        payload = b"" if body is None else jsoncodec.dumps(body)
        try:
            msg = await self._nc.request(subject, payload, timeout=timeout, headers=headers or None)
        except nats.errors.NoRespondersError as exc:
            raise ServiceUnreachable(
                f"no flows service answered on {subject} at {self._server()}: start one with "
                "`flows serve` (and check that --subject-prefix matches the service's)"
            ) from exc
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            retry = (
                "; the command may still have taken effect: retry it with the same Nats-Msg-Id"
                if operation.startswith("cmd.")
                else ""
            )
            raise ServiceUnreachable(
                f"the flows service did not answer on {subject} within {timeout:g}s at "
                f"{self._server()}: it may be overloaded or stuck, check its logs{retry}"
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise ServiceUnreachable(
                f"lost the connection to NATS at {self._server()} while sending {subject} "
                f"({_describe(exc)}): check that the NATS server is running"
            ) from exc
        reply = _parse_reply(subject, msg.data, msg.headers or {})
        if reply.position is not None and as_of is None:
            self.position = max(self.position, reply.position)
        if self._raise_errors:
            reply.raise_for_status(subject)
        return reply

    def _server(self) -> str:
        url = self._nc.connected_url
        return redact_url(url.geturl()) if url is not None else "NATS"


def _parse_reply(subject: str, data: bytes, headers: Mapping[str, str]) -> Reply:
    status, position = status_and_position(headers)
    if status is None:
        raise BadReply(
            f"the reply on {subject} has no valid {STATUS} header "
            f"({headers.get(STATUS)!r}): something other than a flows service answered; check "
            "what subscribes to it"
        )
    try:
        body = jsoncodec.loads(data) if data.strip() else None
    except ValueError as exc:
        raise BadReply(f"the reply on {subject} is not JSON: {data[:80]!r}") from exc
    return Reply(status, body, dict(headers), position)


def _as_of_text(as_of: AsOf) -> str:
    if isinstance(as_of, datetime):
        if as_of.tzinfo is None:
            raise ValueError("as_of: give an aware datetime (a naive one has no fixed instant)")
        return as_of.isoformat()
    return str(as_of)


def _checked_prefix(prefix: str) -> str:
    if not all(prefix.split(".")) or any(c in prefix for c in " \t\r\n*>"):
        raise ValueError(
            f"invalid subject prefix {prefix!r}: use dot-separated tokens without spaces, "
            "'*' or '>' (the default is 'flows')"
        )
    return prefix


def _put(body: dict[str, Any], **fields: Any) -> None:
    """Add the fields that were given; None means "not sent" (Prefect's defaults apply)."""
    body.update({key: value for key, value in fields.items() if value is not None})


def _list(items: Sequence[Any] | None) -> list[Any] | None:
    return None if items is None else list(items)


def _dict(items: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if items is None else dict(items)


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("detail", "exception_message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return "no detail" if body is None else jsoncodec.dumps(body).decode()[:200]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
