"""A service started before its PostgreSQL database accepts connections waits for it; one whose
credentials the database refuses stops at once (issue 13). Real `flows serve` processes.

"Not listening yet" is a loopback port with nothing behind it until the test puts a TCP
forwarder to the real PostgreSQL there, once the service has said that it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.engine import make_url

from services.embedded import EmbeddedNats, free_port
from tests.backends import fresh_postgres_database
from tests.processes import ServiceProcess, new_target, run_flows


async def test_a_service_started_before_its_database_listens_waits_then_serves(
    nats_server: EmbeddedNats, postgres_url: str, tmp_path: Path
) -> None:
    name = f"flows_wait_{uuid.uuid4().hex[:10]}"
    async with fresh_postgres_database(postgres_url, name) as url:
        real = make_url(url)
        port = free_port()
        later = real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        target = new_target(nats_server.url, tmp_path)
        async with ServiceProcess(
            target, FLOWS_DATABASE_URL=later, FLOWS_STARTUP_TIMEOUT_S="60"
        ) as service:
            service.spawn()
            await service.wait_for_output(
                "waiting for the read-model database: nothing accepts connections at "
                f"postgresql+asyncpg://{real.username}@127.0.0.1:{port}/{name}"
            )
            assert service.returncode is None, service.log()
            async with forwarding(port, real.host or "127.0.0.1", real.port or 5432):
                await service.wait_ready()
                created = await run_flows(target, "create", "patient", "--json")
                assert created.returncode == 0, str(created)
                await service.stop()
        log = service.log_path.read_text()
        assert "the read-model database is ready, after" in log, log
        assert "Traceback" not in log, log


async def test_refused_database_credentials_stop_start_up_at_once(
    nats_server: EmbeddedNats, postgres_url: str, tmp_path: Path
) -> None:
    refused = make_url(postgres_url).set(username=f"nobody_{uuid.uuid4().hex[:8]}")
    target = new_target(nats_server.url, tmp_path)
    # Start-up would wait a minute for a database that is not ready: a refusal must not wait.
    async with ServiceProcess(
        target,
        FLOWS_DATABASE_URL=refused.render_as_string(hide_password=False),
        FLOWS_STARTUP_TIMEOUT_S="60",
    ) as service:
        service.spawn()
        code = await service.wait(timeout_s=20)
    log = service.log_path.read_text()
    assert code == 3, log
    assert "refused the credentials" in log and "FLOWS_DATABASE_URL" in log, log
    assert "waiting for the read-model database" not in log, log
    assert "Traceback" not in log, log


@contextlib.asynccontextmanager
async def forwarding(port: int, host: str, to_port: int) -> AsyncIterator[None]:
    """Listen on loopback `port` and relay each connection to host:to_port, both ways."""
    pumps: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, to_port)
        for task in (pump(client_r, server_w), pump(server_r, client_w)):
            pumps.add(asyncio.create_task(task))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await server.wait_closed()
