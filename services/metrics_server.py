"""The HTTP endpoint for operators (`FLOWS_METRICS_ADDR=host:port`): `GET /metrics` (Prometheus
text) and `GET /healthz` (200 when ready and not degraded, else 503, for container health
checks). A few lines of asyncio rather than a web framework: two read-only paths, one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson

from services.metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["MetricsServer", "parse_address"]

log = logging.getLogger(__name__)

# A scraper that sends nothing, or very slowly, is dropped after this long.
_REQUEST_TIMEOUT_S = 5.0
_MAX_HEADER_LINES = 100


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (a port of 0 picks a free one) into its parts, or a ValueError that says
    what to write."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(
            f"FLOWS_METRICS_ADDR / --metrics-addr: expected host:port (e.g. 127.0.0.1:9464 or "
            f"0.0.0.0:9464), got {address!r}"
        )
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsServer:
    def __init__(self, metrics: Metrics, address: str) -> None:
        self._metrics = metrics
        self._host, self._port = parse_address(address)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the OS picked, when asked for 0)."""
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("metrics on http://%s:%d/metrics (and /healthz)", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                method, path = await _request_line(reader)
            status, content_type, body = await self._route(method, path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass  # a client that went away or spoke no HTTP: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in {"GET", "HEAD"}:
            return "405 Method Not Allowed", "text/plain", b"GET or HEAD only\n"
        try:
            if path == "/metrics":
                return "200 OK", CONTENT_TYPE_LATEST, await self._metrics.scrape()
            if path == "/healthz":
                healthy, report = await self._metrics.healthy()
                status = "200 OK" if healthy else "503 Service Unavailable"
                return status, "application/json", orjson.dumps(report) + b"\n"
        except Exception as exc:
            log.warning("could not answer %s: %s", path, exc)
            detail = f"could not read the service's state: {exc}\n".encode()
            return "503 Service Unavailable", "text/plain", detail
        return "404 Not Found", "text/plain", b"/metrics or /healthz\n"


async def _request_line(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of an HTTP request; its headers are read and ignored."""
    line = (await reader.readline()).decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request")
    for _ in range(_MAX_HEADER_LINES):
        if (await reader.readline()) in (b"\r\n", b"\n", b""):
            break
    return parts[0], parts[1].split("?", 1)[0]
