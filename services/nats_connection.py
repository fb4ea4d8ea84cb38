"""The service's own NATS connections (the event log's, the log tools'): seed lists,
reconnects, a hung server left in seconds, credentials refused said at once, log lines a
person can act on. The request connection is FastStream's (services/app.py), with the same
settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from nats.aio.client import Client as NatsClient

from services.nats_headers import FastHeadersClient
from services.nats_options import Role, ServerChoice, connect_options
from services.seeds import seed_urls
from services.settings import Settings, redact_url

__all__ = ["NatsRefused", "connect_nats"]

log = logging.getLogger(__name__)


class NatsRefused(ConnectionError):
    """NATS answered but refused this client: wrong or missing credentials, or a TLS
    certificate it does not accept. Retrying cannot help; the settings must change."""


async def connect_nats(
    settings: Settings, name: str, *, retry: bool = True, role: Role = "log"
) -> NatsClient:
    """A connection that never gives up reconnecting (nats-py stops after ~2 minutes by
    default), or, for one-shot tools, one that fails fast. Authentication, TLS and the inbox
    prefix come from the settings for `role` (services/nats_options.py: the log's connection
    and the tools that read the log are "log"); log lines name the server without its
    credentials.

    A server that refuses the credentials on the first connection raises NatsRefused at once
    (nats-py would retry forever), so a misconfigured service exits with the reason."""
    where = redact_url(settings.nats_url)
    connection: list[NatsClient] = []

    async def on_error(error: Exception) -> None:
        # nats-py's default prints a traceback per failed attempt; one line says enough.
        log.warning("NATS connection %s at %s: %s", name, where, error or repr(error))
        if not connection and _is_refusal(error):
            # Raised inside nats-py's connect loop, this ends it (see below).
            raise NatsRefused(
                f"NATS at {where} refused the connection {name}: {error or repr(error)}; check "
                "the credentials and TLS settings (FLOWS_NATS_USER/PASSWORD, FLOWS_NATS_TOKEN, "
                "FLOWS_NATS_NKEY_SEED, FLOWS_NATS_CREDS, their FLOWS_NATS_LOG_* counterparts "
                "for the log's connection, FLOWS_NATS_TLS_*) against the server's"
            ) from None

    async def on_disconnect() -> None:
        if not connection or connection[0].is_closed:
            return  # a first attempt that failed (reported above), or our own close or drain
        log.warning("NATS connection %s lost; reconnecting to %s", name, where)

    # The server just lost is tried last: a hung one would cost a whole connect timeout.
    choice = ServerChoice(reconnect_time_wait_s=0.5)

    async def on_reconnect() -> None:
        choice.connected_to(nc)
        log.info("NATS connection %s re-established", name)

    nc = FastHeadersClient()
    try:
        await nc.connect(
            seed_urls(settings.nats_url),  # one URL or a cluster's seed list
            name=name,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            # nats-py reads 0 as "no limit": one attempt is 1.
            max_reconnect_attempts=-1 if retry else 1,
            allow_reconnect=retry,
            connect_timeout=2,
            # Annotated int, used as a float (asyncio.sleep).
            reconnect_time_wait=0.5,  # type: ignore[arg-type]
            reconnect_to_server_handler=choice,
            # A hung server is left after ~2 intervals (Settings.nats_ping_interval_s).
            ping_interval=settings.nats_ping_interval_s,  # type: ignore[arg-type]
            max_outstanding_pings=2,
            **connect_options(settings, role),
        )
    except BaseException:
        # nats-py leaves the socket of a failed first attempt open. After a failed TLS
        # handshake asyncio has closed the socket already but nats-py's close would wait
        # forever for it: bound the wait.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
        raise
    connection.append(nc)
    choice.connected_to(nc)
    return nc


def _is_refusal(error: Exception) -> bool:
    if isinstance(error, ssl.SSLError):  # e.g. the server's certificate is not trusted
        return True
    text = str(error).lower()
    return "authorization violation" in text or "authentication" in text
