"""Creating the event log's stream once JetStream can hold it, saying what it waits for.

A NATS cluster's JetStream is usable only once its servers have met and elected a meta leader,
and a stream of R replicas can be placed only once R servers are in: before that JetStream
answers nothing (a timeout), "temporarily unavailable" (10008) or "no suitable peers for
placement" (10005). Those are waited out (services/startup.py); the log line names how many
servers the connected server sees in its cluster, read from its INFO (the list of client URLs it
advertises, itself included), so an operator can tell a cluster still forming from a missing
server. Any other refusal is a setting to fix, reported at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import ParseResult

import orjson
from nats.aio.client import Client as NatsClient

from events.contract.errors import JetStreamRefused, LogUnavailable
from events.jetstream_log import JetStreamLog, StreamSettings
from services.settings import Settings
from services.startup import wait_for

__all__ = ["ClusterView", "ensure_stream_when_ready", "read_server_info"]

_NO_SUITABLE_PEERS = 10005  # JSClusterNoPeersErr
_TEMPORARILY_UNAVAILABLE = 10008  # JSClusterNotAvailErr: no meta leader yet
_INFO_TIMEOUT_S = 1.0


async def ensure_stream_when_ready(
    event_log: JetStreamLog, nc: NatsClient, settings: Settings
) -> None:
    stream = StreamSettings(settings.stream, settings.stream_replicas, settings.duplicate_window_s)

    async def diagnose(error: Exception) -> str | None:
        if not isinstance(error, LogUnavailable):
            return None
        code = error.code if isinstance(error, JetStreamRefused) else None
        if code is not None and code not in (_NO_SUITABLE_PEERS, _TEMPORARILY_UNAVAILABLE):
            return None  # e.g. the stream exists with settings we may not change
        view = await ClusterView.of(nc)
        return view.explain(code, settings.stream_replicas, str(error))

    await wait_for(
        "JetStream", lambda: event_log.ensure_stream(stream), diagnose, settings.startup_timeout_s
    )


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the connected server says of itself and its cluster in its INFO."""

    server: str | None = None
    cluster: str | None = None
    seen: int = 0  # servers in the cluster, this one included

    @classmethod
    async def of(cls, nc: NatsClient) -> ClusterView:
        url = nc.connected_url
        info = None if url is None else await read_server_info(url)
        if info is None:
            return cls()
        # Alone, a server advertises no URLs; once routed, every client URL of the cluster,
        # its own included.
        return cls(
            server=info.get("server_name") or info.get("server_id"),
            cluster=info.get("cluster") or None,
            seen=max(1, len(info.get("connect_urls") or [])),
        )

    def explain(self, code: int | None, replicas: int, error: str) -> str:
        """Why JetStream is not ready, for a person: `code` is JetStream's refusal (None when
        it did not answer), `error` the log's own message for that."""
        if self.server is None:
            where = "the server's INFO could not be read"
        elif self.cluster is None:
            where = f"server {self.server} is not in a cluster"
        else:
            count = f"{self.seen} of {replicas}" if self.seen < replicas else str(self.seen)
            where = f"{count} servers seen, in cluster {self.cluster}, connected to {self.server}"
        if code == _NO_SUITABLE_PEERS:
            hint = (
                "a server that just joined needs a moment to join JetStream"
                if self.seen >= replicas
                else "start the cluster's other servers, or set FLOWS_STREAM_REPLICAS to at "
                "most the number of JetStream servers it has"
            )
            return f"no suitable peers yet for {replicas} replicas ({where}); {hint}"
        if code == _TEMPORARILY_UNAVAILABLE:
            return (
                f"JetStream has no leader yet ({where}); a cluster elects one once a majority "
                "of its servers are up"
            )
        if self.cluster is not None:  # earlier still, a forming cluster does not answer at all
            return (
                f"JetStream does not answer yet ({where}); a cluster answers once a majority "
                "of its servers are up and have elected a leader"
            )
        return f"{error} ({where})"


async def read_server_info(url: ParseResult) -> dict[str, Any] | None:
    """The INFO a nats-server sends first on a new connection (before any authentication), or
    None if it cannot be read (a websocket URL, a server that wants TLS first, no answer)."""
    if url.scheme not in ("nats", "tls") or url.hostname is None:
        return None
    try:
        async with asyncio.timeout(_INFO_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(url.hostname, url.port or 4222)
            try:
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    if not line.startswith(b"INFO "):
        return None
    try:
        info: dict[str, Any] = orjson.loads(line[5:])
    except orjson.JSONDecodeError:
        return None
    return info
