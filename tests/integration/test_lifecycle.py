"""Starting and stopping the in-process service (`create_app(settings)`).

These tests manage the app themselves instead of using the `service` fixture, whose start and
stop are made deterministic for the other tests (see `conftest.py`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlparse

import orjson
from nats.aio.client import Client as NatsClient

from services.app import create_app
from services.embedded import EmbeddedNats
from services.settings import Settings
from tests.integration.conftest import catch_up, wait_until_answering
from tests.integration.wire import assert_success, call, stream_messages

# Far below nats-py's 30 s drain timeout, far above a healthy stop (tens of milliseconds).
STOP_BUDGET_S = 5.0


class RawNats:
    """A bare NATS protocol connection: what it writes goes onto the socket at once, without
    waiting for a flusher task, so it can ask the very moment `app.start()` returns."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str) -> RawNats:
        parsed = urlparse(url)
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        assert (await reader.readline()).startswith(b"INFO ")
        options = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True}
        writer.write(b"CONNECT " + orjson.dumps({**options, "protocol": 1}) + b"\r\nPING\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"PONG")
        return cls(reader, writer)

    def request_now(self, subject: str, payload: bytes, sid: int) -> None:
        inbox = f"_INBOX.raw.{uuid.uuid4().hex}"  # the service answers on inboxes only
        self.writer.write(
            f"SUB {inbox} {sid}\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode()
            + payload
            + b"\r\n"
        )

    async def reply_headers(self) -> list[bytes]:
        """The header lines of the next message: `NATS/1.0 503` is "no responders"."""
        while True:
            line = await self.reader.readline()
            kind = line.split()[0]
            if kind == b"PING":
                self.writer.write(b"PONG\r\n")
            elif kind == b"HMSG":
                header_size, total = (int(part) for part in line.split()[-2:])
                data = await self.reader.readexactly(total + 2)
                return data[:header_size].split(b"\r\n")
            elif kind == b"MSG":
                await self.reader.readexactly(int(line.split()[-1]) + 2)
                return [b"NATS/1.0"]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


class TestStart:
    async def test_the_service_answers_as_soon_as_start_returns(
        self, settings: Settings, nats_server: EmbeddedNats
    ) -> None:
        """Once `app.start()` has returned, nats-server must know the service's subscriptions:
        a request put on the wire at that moment is answered, not refused as "no responders"."""
        raw = await RawNats.connect(nats_server.url)
        try:
            for sid in range(1, 4):
                app = create_app(settings)
                await app.start()
                try:
                    raw.request_now(f"{settings.subject_prefix}.query.count", b"{}", sid)
                    lines = await asyncio.wait_for(raw.reply_headers(), 10)
                finally:
                    await app.stop()
                assert lines[0] != b"NATS/1.0 503", "no responders right after app.start()"
                assert b"Flows-Status: 200" in lines, lines
        finally:
            await raw.close()


class TestStop:
    async def test_stop_is_prompt_when_the_projector_is_behind(
        self, settings: Settings, nc: NatsClient
    ) -> None:
        """Commands, then stop at once, while the projector still applies their messages.

        Whether the projector is still busy at that moment is a race, so up to three rounds;
        the first slow stop fails the test (it takes nats-py's 30 s drain timeout).
        """
        prefix = settings.subject_prefix
        for round_ in range(3):
            app = create_app(settings)
            await app.start()
            stopping = False
            try:
                await wait_until_answering(nc, prefix)
                created = await call(nc, prefix, "cmd.create", {"name": f"behind-{round_}"})
                assert_success(created, 201)
                flow_id = created.json["id"]
                assert_success(await call(nc, prefix, "cmd.update", {"id": flow_id}), 204)
                assert_success(await call(nc, prefix, "cmd.delete", {"id": flow_id}), 204)
                again = await call(nc, prefix, "cmd.create", {"name": f"behind-{round_}"})
                assert_success(again, 201)
                started = time.monotonic()
                stopping = True
                await app.stop()
                took = time.monotonic() - started
            finally:
                if not stopping:
                    await app.stop()
            assert took < STOP_BUDGET_S, f"stopping the service took {took:.1f}s"

    async def test_stop_is_prompt_when_the_projector_is_idle(
        self, settings: Settings, nc: NatsClient
    ) -> None:
        app = create_app(settings)
        await app.start()
        try:
            await wait_until_answering(nc, settings.subject_prefix)
            reply = await call(nc, settings.subject_prefix, "cmd.create", {"name": "x"})
            assert_success(reply, 201)
            await catch_up(nc, settings)
        finally:
            started = time.monotonic()
            await asyncio.wait_for(app.stop(), timeout=40)
        assert time.monotonic() - started < STOP_BUDGET_S

    async def test_a_restarted_service_serves_everything_acknowledged_before(
        self, settings: Settings, nc: NatsClient
    ) -> None:
        prefix = settings.subject_prefix
        app = create_app(settings)
        await app.start()
        try:
            await wait_until_answering(nc, prefix)
            created = [
                await call(nc, prefix, "cmd.create", {"name": f"kept-{i}"}) for i in range(5)
            ]
            await catch_up(nc, settings)
        finally:
            await app.stop()
        messages = await stream_messages(nc, settings.stream)

        again = create_app(settings)
        await again.start()
        try:
            await wait_until_answering(nc, prefix)
            # No header: a restarted instance first catches up with the log as it found it.
            listed = await call(nc, prefix, "query.filter")
            assert listed.json == [reply.json for reply in created]
            existing = await call(nc, prefix, "cmd.create", {"name": "kept-0"})
            assert_success(existing, 200)
            assert existing.data == created[0].data
            assert await stream_messages(nc, settings.stream) == messages
            await catch_up(nc, settings)
        finally:
            await again.stop()
