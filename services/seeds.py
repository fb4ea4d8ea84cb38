"""FLOWS_NATS_URL as every NATS tool takes it: one URL, or a comma-separated list of seed URLs.

A seed list names some servers of one NATS cluster (`nats://n1:4222,nats://n2:4222`); a client
connects to whichever answers and learns the rest of the cluster from it. nats-py and FastStream
take the list as a Python list, so the setting is split here, and checked here, once: a malformed
seed is refused when the settings are read, naming the seed, instead of failing deep inside a
connection attempt.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["SCHEMES", "check_seed_urls", "hide_credentials", "seed_urls"]

# The schemes nats-py connects with (it refuses a list that mixes websocket and TCP ones).
SCHEMES = ("nats", "tls", "ws", "wss")


def seed_urls(text: str) -> list[str]:
    """The URLs of a seed list, in order, without blanks (`a, b,` is `[a, b]`)."""
    return [url.strip() for url in text.split(",") if url.strip()]


def check_seed_urls(text: str, source: str) -> None:
    """Refuse a seed list nats-py could not use. `source` names the setting for the message.

    A refused seed is named by its number and at most its scheme and host: what follows may be
    part of a password that held a comma, which must never be printed.
    """
    urls = seed_urls(text)
    if not urls:
        raise ValueError(f"{source} is empty: give a NATS URL such as nats://127.0.0.1:4222")
    for number, url in enumerate(urls, start=1):
        where = f"{source}: seed {number} of {len(urls)}"
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.netloc:
            raise ValueError(
                f"{where} is not a URL of the form nats://host:port (schemes: "
                f"{', '.join(SCHEMES)}); seeds are separated by commas, so a comma inside a "
                "password must be written %2C"
            )
        if not parts.hostname:
            raise ValueError(f"{where} names no host")
        try:
            parts.port  # noqa: B018 - urllib checks the port only when it is read
        except ValueError:
            # Not the port's text: `nats://user:pass,word@host` splits into a "port" `pass`.
            raise ValueError(
                f"{where} ({parts.scheme}://{parts.hostname}:...) has a port that is not a "
                "number from 0 to 65535; a comma inside a password must be written %2C"
            ) from None
    schemes = {urlsplit(url).scheme in ("ws", "wss") for url in urls}
    if len(schemes) > 1:
        raise ValueError(f"{source} mixes websocket (ws://, wss://) and TCP seeds: use one kind")


def hide_credentials(url: str) -> str:
    """One URL fit for a log line: any user, password or token replaced by `***`."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
