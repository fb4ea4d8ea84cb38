"""How every connection of the service reaches NATS: authentication, TLS and inbox prefix.

`connect_options` is the one place that turns settings into nats-py `connect()` arguments; the
service's log connection and the tools pass them to nats-py as they are, and the FastStream
broker receives the same values through `broker_security` (FastStream takes them as one
security object). Secrets travel only inside these options, never into a log line.

Two roles sign in, matching the two connections of a running service and the shipped
permission layout (deploy/nats/nats-server.conf):
- "requests": the connection that answers requests (the FastStream broker), and the clients' and
  the CLI's connections that send them;
- "log": the connection that owns the event log (appends, reads, the JetStream API), and the
  tools that read or rebuild from it. It uses the FLOWS_NATS_LOG_* credentials when any is set.
Each connection's replies arrive under a private inbox prefix, `_INBOX.<user>`, when it signs
in as a named user, so that a permission can give each user its own inbox and no other.
"""

from __future__ import annotations

import random
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.client import Server as NatsServer

from services.settings import Settings

if TYPE_CHECKING:  # FastStream is for the service only: the CLI's client path never imports it
    from faststream.nats.security import NatsSecurity

__all__ = [
    "Role",
    "ServerChoice",
    "broker_security",
    "connect_options",
    "inbox_prefix",
    "tls_context",
]

T = TypeVar("T")
Role = Literal["requests", "log"]

# nats-py's own default: every client's replies under one shared prefix.
_SHARED_INBOX = "_INBOX"
# A user name that can stand as one subject token (no dots, spaces or wildcards).
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def _credentials_kind(settings: Settings, role: Role) -> str:
    """Which settings hold the credentials of `role`: "nats_log_" or "nats_"."""
    if role == "log" and any(
        getattr(settings, f"nats_log_{name}") is not None
        for name in ("user", "token", "nkey_seed", "creds")
    ):
        return "nats_log_"
    return "nats_"


def inbox_prefix(settings: Settings, role: Role = "requests") -> str:
    """Where a connection's replies arrive: FLOWS_NATS_INBOX_PREFIX when set (connections with
    the main credentials), else `_INBOX.<user>` for a connection that signs in as a named user,
    else nats-py's shared `_INBOX`."""
    kind = _credentials_kind(settings, role)
    if kind == "nats_" and settings.nats_inbox_prefix is not None:
        return settings.nats_inbox_prefix
    user: str | None = getattr(settings, f"{kind}user")
    if user is not None and _TOKEN.fullmatch(user):
        return f"{_SHARED_INBOX}.{user}"
    return _SHARED_INBOX


def connect_options(settings: Settings, role: Role = "requests") -> dict[str, Any]:
    """The authentication, TLS and inbox arguments of `nats.connect()` for a connection of
    `role` (empty for an open, plain-text server and no user)."""
    options: dict[str, Any] = {}
    kind = _credentials_kind(settings, role)
    user, token = getattr(settings, f"{kind}user"), getattr(settings, f"{kind}token")
    seed, creds = getattr(settings, f"{kind}nkey_seed"), getattr(settings, f"{kind}creds")
    if user is not None:
        options["user"] = user
        options["password"] = getattr(settings, f"{kind}password")
    if token is not None:
        options["token"] = token
    if seed is not None:
        options["nkeys_seed"] = str(seed)
    if creds is not None:
        options["user_credentials"] = str(creds)
    prefix = inbox_prefix(settings, role)
    if prefix != _SHARED_INBOX:
        options["inbox_prefix"] = prefix
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    if settings.nats_tls_hostname is not None:
        options["tls_hostname"] = settings.nats_tls_hostname
    return options


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A context that trusts only the configured CA (else the system's CAs) and presents the
    client certificate, when any TLS file is configured; None leaves nats-py's defaults (a
    `tls://` URL then uses the system's CAs)."""
    ca, cert, key = settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key
    if ca is None and cert is None:
        return None
    context = _loaded(
        "CA certificate (FLOWS_NATS_TLS_CA)",
        ca,
        lambda: ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca)
        ),
    )
    if cert is not None and key is not None:
        _loaded(
            "client certificate and key (FLOWS_NATS_TLS_CERT, FLOWS_NATS_TLS_KEY)",
            cert,
            lambda: context.load_cert_chain(certfile=cert, keyfile=key),
        )
    return context


def broker_security(settings: Settings) -> NatsSecurity | None:
    """`connect_options` in the form FastStream's NatsBroker takes them (`security=`): the
    connection that answers requests (role "requests")."""
    from faststream.nats.security import (
        NatsCredentials,
        NatsNKey,
        NatsSecurity,
        NatsToken,
        NatsUserPassword,
    )

    options = connect_options(settings)
    context: ssl.SSLContext | None = options.get("tls")
    hostname: str | None = options.get("tls_hostname")
    if "user" in options:
        return NatsUserPassword(
            options["user"], options["password"], ssl_context=context, tls_hostname=hostname
        )
    if "token" in options:
        return NatsToken(options["token"], ssl_context=context, tls_hostname=hostname)
    if "nkeys_seed" in options:
        return NatsNKey.from_file(options["nkeys_seed"], ssl_context=context, tls_hostname=hostname)
    if "user_credentials" in options:
        return NatsCredentials.from_file(
            options["user_credentials"], ssl_context=context, tls_hostname=hostname
        )
    if context is not None or hostname is not None:
        return NatsSecurity(ssl_context=context, tls_hostname=hostname)
    return None


def _loaded(what: str, path: Path | None, load: Callable[[], T]) -> T:
    try:
        return load()
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the NATS TLS {what} from {str(path)!r}: {exc}; check that the file "
            "is a PEM file readable by the service"
        ) from None


class ServerChoice:
    """nats-py's `reconnect_to_server_handler`: after a connection is lost, try the other
    servers of the pool before the one just lost.

    A hung server (SIGSTOPped, stalled, partitioned with its sockets open) still completes a
    TCP handshake in its kernel but never sends INFO, so an attempt on it costs the whole
    connect timeout (2 s). nats-py shuffles the pool, the lost server included, before it
    reconnects, and so tried the hung server first one time in three
    (tests/integration/test_cluster_faults.py, TestHungNodes: the instances left a hung server
    after 6-8 s instead of 4-6 s). Among the servers, those with the fewest failed attempts
    since their last success come first, the lost one counting one more, ties broken at
    random (so instances spread); a server already tried and failed waits
    `reconnect_time_wait` first, as nats-py's own choice does.

    `connected_to(client)` must be called after each (re)connection: it notes the server the
    connection is on, the one to try last if it is lost."""

    def __init__(self, reconnect_time_wait_s: float) -> None:
        self._wait_s = reconnect_time_wait_s
        self._current: str | None = None

    def connected_to(self, client: NatsClient) -> None:
        url = client.connected_url
        self._current = None if url is None else url.netloc

    def __call__(
        self, servers: list[NatsServer], _info: dict[str, Any]
    ) -> tuple[NatsServer | None, float]:
        if not servers:
            return None, 0.0

        def failures(server: NatsServer) -> int:
            return server.reconnects + (server.uri.netloc == self._current)

        fewest = min(failures(server) for server in servers)
        chosen = random.choice([server for server in servers if failures(server) == fewest])
        return chosen, self._wait_s if chosen.reconnects else 0.0
