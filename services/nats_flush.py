"""A flush that means what it says: every command this connection queued has reached the server.

nats-py's `flush()` writes its PING straight to the socket, while commands queued before it
(SUB, UNSUB, PUB) wait in a buffer for the flusher task; on a busy loop the PING can overtake
them, so its PONG proves nothing about them (nats-py 2.16, `Client._send_ping`). Seen here as a
request sent the moment `app.start()` returned meeting "no responders". So: first let the flusher
write the buffer (nats-py's own forced flush), then PING.
"""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

__all__ = ["flush_all"]


async def flush_all(connection: NatsClient, timeout_s: int = 10) -> None:
    """Return once the server has processed everything queued on `connection` so far."""
    # nats-py's forced flush of its buffer (a private method: there is no public one that waits).
    await connection._flush_pending(force_flush=True)
    await connection.flush(timeout=timeout_s)
