"""Start-up that waits for its dependencies instead of exiting at the first refusal.

A deployment starts its service instances together with the NATS cluster and the database
(docker compose, a Kubernetes rollout): for a few seconds NATS may not listen yet, JetStream may
have no leader or too few servers for the stream's replicas, the database may still be starting.
`wait_for` retries one dependency until it is ready, saying in the log what is missing, for up to
FLOWS_STARTUP_TIMEOUT_S; past that it gives up with the last reason, and `flows serve` exits 3.
An error that waiting cannot fix (refused credentials, a stream configured otherwise) is not
retried: the caller's `diagnose` says which errors are worth waiting out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Diagnose", "StartupFailed", "wait_for"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Why a failed attempt is worth waiting out, as a person should read it, or None when it is not.
Diagnose = Callable[[Exception], Awaitable[str | None]]

_FIRST_DELAY_S = 0.1
_MAX_DELAY_S = 2.0
# While the reason stays the same, say it again this often (a changed reason is said at once).
_REPEAT_LOG_S = 5.0


class StartupFailed(Exception):
    """The service cannot start; the message says why and what setting to look at."""


async def wait_for(
    what: str, attempt: Callable[[], Awaitable[T]], diagnose: Diagnose, timeout_s: float
) -> T:
    """`attempt()`'s result once it succeeds. A failure that `diagnose` explains is retried,
    with growing pauses (a forming cluster needs seconds, not a busy loop), until `timeout_s`
    has passed: then StartupFailed with the reason. Any other failure is raised at once."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout_s
    delay = _FIRST_DELAY_S
    said: tuple[str, float] | None = None  # the reason last logged, and when
    while True:
        try:
            result = await attempt()
        except Exception as error:
            reason = await diagnose(error)
            if reason is None:
                raise
            now = loop.time()
            if now >= deadline:
                raise StartupFailed(
                    f"gave up waiting for {what} after {timeout_s:g}s "
                    f"(FLOWS_STARTUP_TIMEOUT_S): {reason}"
                ) from error
            if said is None or said[0] != reason or now - said[1] >= _REPEAT_LOG_S:
                log.warning(
                    "waiting for %s: %s (retrying for up to %.0fs more; FLOWS_STARTUP_TIMEOUT_S)",
                    what,
                    reason,
                    deadline - now,
                )
                said = (reason, now)
            await asyncio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, _MAX_DELAY_S)
            continue
        if said is not None:
            log.info("%s is ready, after %.1fs of waiting", what, loop.time() - started)
        return result
