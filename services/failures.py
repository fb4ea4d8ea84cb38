"""The one mapping from an exception raised while answering a request to its error reply.

Over NATS an exception escaping a handler reaches nobody (the requester only sees a timeout),
so every handler ends here: the service's own errors (events/contract/errors.py) carry
Prefect's status and body; a read-model failure is a 503 worth retrying; anything else is a 500
whose cause is in the service's log, never in the reply.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from events.contract.errors import FlowsError, ServiceUnavailable
from events.contract.replies import Reply, error_reply

__all__ = ["failure_reply"]

log = logging.getLogger(__name__)


def failure_reply(error: Exception, kind: str, position: int | None = None) -> Reply:
    """The reply to a `kind` of request ("command", "query", ...) that raised `error`; call it
    inside the `except`, so that the log has the traceback. `position` is where a refused
    command leaves the requester (what this instance has answered so far)."""
    if isinstance(error, FlowsError):
        return error_reply(error, position)
    if isinstance(error, SQLAlchemyError):
        log.exception("the read model failed a %s", kind)
        unavailable = ServiceUnavailable("the read model could not answer now; retry shortly")
        return error_reply(unavailable, position)
    log.exception("unexpected failure while answering a %s", kind)
    internal = FlowsError(f"internal error while answering the {kind}; see the service's log")
    return error_reply(internal, position)
