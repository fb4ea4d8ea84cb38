"""`flows serve`: run the service in the foreground until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Awaitable
from urllib.parse import urlparse

from events.contract.errors import LogUnavailable
from services.app import create_app
from services.embedded import EmbeddedNats, nats_answers
from services.fault_injection import install_from_env as install_fault_injection
from services.nats_readiness import wait_for_nats
from services.settings import Settings, redact_url
from services.startup import StartupFailed
from services.workers import supervise

__all__ = ["before_run", "serve"]

log = logging.getLogger(__name__)


def before_run() -> None:
    """Use uvloop for the service's event loop when it is installed."""
    try:
        import uvloop
    except ImportError:  # optional: the standard loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or until `stop` is set, for callers that embed the service),
    answer what was already received, and return the exit code."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_fault_injection()  # only for crash tests: off unless FLOWS_FAULT_* is set
    if stop is None:
        # Installed first: start-up may wait a minute for NATS or JetStream, and a SIGTERM
        # meanwhile (docker stop, a rollout) must end the wait, not be ignored until it ends.
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    embedded: EmbeddedNats | None = None
    if settings.nats_url_explicit:
        try:  # NATS may be starting along with us: wait for it, up to FLOWS_STARTUP_TIMEOUT_S
            if not await _unless_stopped(wait_for_nats(settings), stop):
                return 0
        except StartupFailed as exc:
            log.error("the flows service could not start: %s", exc)
            return 3
    elif not nats_answers(settings.nats_url):
        # The default URL: run nats-server ourselves, where the URL says.
        port = urlparse(settings.nats_url).port or 4222
        embedded = EmbeddedNats(settings.data_dir / "nats", port=port)
        log.info("no NATS at %s: starting an embedded nats-server", redact_url(settings.nats_url))
        try:
            await asyncio.to_thread(embedded.start)
        except (OSError, RuntimeError) as exc:
            log.error("could not start the embedded nats-server: %s", exc)
            return 3
        settings = dataclasses.replace(settings, nats_url=embedded.url)
    try:
        if settings.workers > 1:  # this process only supervises (services/workers.py)
            return await supervise(settings, stop)
        return await _run(settings, stop)
    finally:
        if embedded is not None:
            await embedded.astop()


async def _run(settings: Settings, stop: asyncio.Event) -> int:
    try:
        app = create_app(settings)
    except ValueError as exc:  # settings that cannot work, e.g. an unreadable TLS file
        log.error("the flows service could not start: %s", exc)
        return 3
    try:
        try:
            started = await _unless_stopped(app.start(), stop)
        except (LogUnavailable, OSError, StartupFailed) as exc:
            log.error("the flows service could not start: %s", exc)
            return 3
        if started:
            await stop.wait()
            log.info("stopping: answering requests already received")
    finally:
        await app.stop()
    log.info("flows service stopped")
    return 0


async def _unless_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Do `work` unless `stop` is set first: True once it is done, False if it was cancelled
    (a SIGTERM while start-up still waits for its dependencies). Its errors are raised."""
    working = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not working.done():
        log.info("stopping while starting: no longer waiting")
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working
        return False
    working.result()
    return True
