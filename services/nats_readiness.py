"""Waiting for NATS itself at start-up: any server of FLOWS_NATS_URL accepting connections.

Only for a URL given explicitly: at the default URL, nothing answering means "run an embedded
nats-server" (services/serve.py), not "wait".
"""

from __future__ import annotations

import asyncio

from services.embedded import nats_answers
from services.settings import Settings, redact_url
from services.startup import wait_for

__all__ = ["wait_for_nats"]


class _NothingAnswers(ConnectionError):
    pass


async def wait_for_nats(settings: Settings) -> None:
    """Return once some seed of the URL accepts TCP connections; StartupFailed (services/
    startup.py) after FLOWS_STARTUP_TIMEOUT_S."""
    where = redact_url(settings.nats_url)

    async def attempt() -> None:
        if not await asyncio.to_thread(nats_answers, settings.nats_url):
            raise _NothingAnswers(where)

    async def diagnose(error: Exception) -> str | None:
        if not isinstance(error, _NothingAnswers):
            return None
        return (
            f"nothing answers at {where} (FLOWS_NATS_URL / --nats-url); start NATS there, or "
            "leave the setting out to run an embedded nats-server"
        )

    await wait_for("NATS", attempt, diagnose, settings.startup_timeout_s)
