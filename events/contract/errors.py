"""The one error hierarchy of the flows service.

Every failure a request can meet is one of these. Each knows the HTTP status Prefect would
answer and the JSON body Prefect would send, so the transport layer never decides either.
Foreign errors (nats-py, SQLAlchemy, pydantic) are translated into these at one boundary each.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConcurrencyConflict",
    "FlowNotFound",
    "FlowsError",
    "InvalidLimit",
    "InvalidRequest",
    "JetStreamRefused",
    "LogEndBehind",
    "LogUnavailable",
    "MalformedEvent",
    "ReadModelBehind",
    "ServiceUnavailable",
    "UnparsableBody",
]


class FlowsError(Exception):
    """Base of every error the service reports to a requester."""

    status: int = 500

    def body(self) -> Any:
        return {"detail": str(self)}

    def summary(self) -> str:
        """One line for the `Nats-Service-Error` header."""
        return str(self).splitlines()[0] if str(self) else type(self).__name__


class FlowNotFound(FlowsError):
    status = 404

    def __init__(self, detail: str = "Flow not found") -> None:
        super().__init__(detail)


class InvalidRequest(FlowsError):
    """A body that fails validation: Prefect's RequestValidationError shape."""

    status = 422

    def __init__(self, errors: list[dict[str, Any]], request_body: Any) -> None:
        self.errors = errors
        self.request_body = request_body
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        super().__init__(f"Invalid request received: {first.get('msg', 'invalid')} at {where}")

    def body(self) -> Any:
        return {
            "exception_message": "Invalid request received.",
            "exception_detail": self.errors,
            "request_body": self.request_body,
        }


class UnparsableBody(FlowsError):
    """A body Python's `json` cannot read for a reason other than its syntax (not UTF-8, UTF-16
    or UTF-32 text, nested past the parser's stack): FastAPI's plain 400."""

    status = 400

    def __init__(self) -> None:
        super().__init__("There was an error parsing the body")


class InvalidLimit(FlowsError):
    """Prefect's LimitBody errors, which use the plain `detail` shape."""

    status = 422


class ServiceUnavailable(FlowsError):
    """The service cannot do the work now; nothing was half-done. Safe to retry."""

    status = 503


class LogUnavailable(ServiceUnavailable):
    """The event log (JetStream) could not be reached or did not answer in time."""


class LogEndBehind(LogUnavailable):
    """JetStream reported a log end below a position known to exist: a server answered with
    stale state (a stream leader deposed while it hung, not yet told). Asked again, a current
    server answers."""


class JetStreamRefused(LogUnavailable):
    """JetStream answered an API request with an error; `code` is its `err_code` (e.g. 10005,
    no suitable peers: a clustered stream's replicas cannot be placed yet)."""

    def __init__(self, endpoint: str, description: str, code: int) -> None:
        self.code = code
        super().__init__(f"JetStream refused {endpoint}: {description} (code {code})")


class ReadModelBehind(ServiceUnavailable):
    """The read model did not reach the requested log position within the wait."""


class ConcurrencyConflict(ServiceUnavailable):
    """An append lost an optimistic-concurrency race too many times in a row."""


class MalformedEvent(Exception):
    """A message in the log that is not a valid event of any known type (not a request error)."""

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(f"malformed event at position {position}: {reason}")
