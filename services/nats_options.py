"""How every connection of the service reaches NATS: authentication and TLS from the settings.

`connect_options` is the one place that turns settings into nats-py `connect()` arguments; the
service's log connection and the tools pass them to nats-py as they are, and the FastStream
broker receives the same values through `broker_security` (FastStream takes them as one
security object). Secrets travel only inside these options, never into a log line.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from faststream.nats.security import (
    NatsCredentials,
    NatsNKey,
    NatsSecurity,
    NatsToken,
    NatsUserPassword,
)

from services.settings import Settings

__all__ = ["broker_security", "connect_options", "tls_context"]

T = TypeVar("T")


def connect_options(settings: Settings) -> dict[str, Any]:
    """The authentication and TLS arguments of `nats.connect()` for these settings (empty for
    an open, plain-text server)."""
    options: dict[str, Any] = {}
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password
    if settings.nats_token is not None:
        options["token"] = settings.nats_token
    if settings.nats_nkey_seed is not None:
        options["nkeys_seed"] = str(settings.nats_nkey_seed)
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
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
    """`connect_options` in the form FastStream's NatsBroker takes them (`security=`)."""
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
