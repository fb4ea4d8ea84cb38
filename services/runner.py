"""`flows serve`: run the service in the foreground until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from events.errors import LogUnavailable
from services.app import create_app
from services.embedded import EmbeddedNats, nats_answers
from services.settings import Settings

__all__ = ["before_run", "serve"]

log = logging.getLogger(__name__)


def before_run() -> None:
    """Use uvloop for the service's event loop when it is installed."""
    try:
        import uvloop
    except ImportError:  # optional: the standard loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    embedded: EmbeddedNats | None = None
    if not nats_answers(settings.nats_url):
        if settings.nats_url_explicit:
            log.error(
                "nothing answers at %s (FLOWS_NATS_URL / --nats-url); start NATS there, or "
                "leave the setting out to run an embedded nats-server",
                settings.nats_url,
            )
            return 3
        embedded = EmbeddedNats(settings.data_dir / "nats", port=4222)
        log.info("no NATS at %s: starting an embedded nats-server", settings.nats_url)
        embedded.start()
        settings = dataclasses.replace(settings, nats_url=embedded.url)
    try:
        app = create_app(settings)
        await app.run()
    except (LogUnavailable, OSError) as exc:
        log.error("the flows service could not start: %s", exc)
        return 3
    finally:
        if embedded is not None:
            await embedded.astop()
    log.info("flows service stopped")
    return 0
