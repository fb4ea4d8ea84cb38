"""Secrets never reach the service's log or its error messages.

`flows serve` runs as a real process at DEBUG level (so nats-py's, FastStream's and the service's
own log lines are all in its log file) against a nats-server that demands a password or a token:
once with the right secret, where it starts, answers and stops; and with wrong secrets, given as
a variable or inside FLOWS_NATS_URL, where it must exit 3 at once naming the refusal (not retry
forever). The secret text must appear in none of those logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.client import FlowsClient
from services.embedded import EmbeddedNats
from services.nats_connection import NatsRefused, connect_nats
from services.settings import Settings
from tests.processes import ServiceProcess, Target, new_target

PASSWORD = "pw-" + uuid.uuid4().hex
TOKEN = "tok-" + uuid.uuid4().hex
WRONG = "wrong-" + uuid.uuid4().hex


def server_with(tmp_path: Path, name: str, authorization: str) -> EmbeddedNats:
    config = tmp_path / f"{name}.conf"
    config.write_text(f"authorization {{ {authorization} }}\n")
    server = EmbeddedNats(tmp_path / name, config=config)
    server.start()
    return server


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = server_with(tmp_path, "pw", f'user: "flows-service", password: "{PASSWORD}"')
    yield server
    server.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = server_with(tmp_path, "tok", f'token: "{TOKEN}"')
    yield server
    server.stop()


def settings_of(target: Target, **auth: str) -> Settings:
    return Settings(
        nats_url=target.nats_url, subject_prefix=target.prefix, stream=target.stream, **auth
    )


async def wait_answering(
    service: ServiceProcess, settings: Settings, timeout_s: float = 20.0
) -> None:
    """Until the service answers `count` with 200, asked over an authenticated connection."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert service.returncode is None, f"the service exited early\n{service.log()}"
        assert time.monotonic() < deadline, f"the service did not answer\n{service.log()}"
        with contextlib.suppress(NatsRefused, OSError):
            nc = await connect_nats(settings, "probe", retry=False)
            try:
                client = FlowsClient(nc, settings.subject_prefix, timeout=1.0)
                with contextlib.suppress(Exception):
                    if (await client.count()).status == 200:
                        return
            finally:
                await nc.close()
        await asyncio.sleep(0.05)


async def test_the_password_is_not_in_the_log_of_a_working_service(
    password_server: EmbeddedNats, tmp_path: Path
) -> None:
    target = new_target(password_server.url, tmp_path)
    auth = {"nats_user": "flows-service", "nats_password": PASSWORD}
    env = {"FLOWS_NATS_USER": "flows-service", "FLOWS_NATS_PASSWORD": PASSWORD}
    async with ServiceProcess(target, FLOWS_LOG_LEVEL="DEBUG", **env) as service:
        service.spawn()
        settings = settings_of(target, **auth)
        await wait_answering(service, settings)
        nc = await connect_nats(settings, "secrets-test", retry=False)
        try:
            created = await FlowsClient(nc, target.prefix).create("quiet")
            assert created.status == 201, created
        finally:
            await nc.close()
        await service.stop()
    log = service.log_path.read_text()
    assert "flows service ready" in log
    assert "DEBUG" in log  # the most talkative level was on
    assert PASSWORD not in log


async def test_a_wrong_password_in_the_url_exits_3_naming_the_refusal_not_the_password(
    password_server: EmbeddedNats, tmp_path: Path
) -> None:
    target = new_target(password_server.url, tmp_path)
    url = password_server.url.replace("nats://", f"nats://flows-service:{WRONG}@")
    async with ServiceProcess(target, FLOWS_LOG_LEVEL="DEBUG", FLOWS_NATS_URL=url) as service:
        service.spawn()
        code = await service.wait()
    log = service.log_path.read_text()
    assert code == 3, log
    shown_url = password_server.url.replace("nats://", "nats://***@")
    assert f"NATS at {shown_url} refused the connection" in log
    assert "Authorization Violation" in log
    assert WRONG not in log


async def test_a_wrong_token_exits_3_without_printing_it(
    token_server: EmbeddedNats, tmp_path: Path
) -> None:
    target = new_target(token_server.url, tmp_path)
    async with ServiceProcess(target, FLOWS_LOG_LEVEL="DEBUG", FLOWS_NATS_TOKEN=WRONG) as service:
        service.spawn()
        code = await service.wait()
    log = service.log_path.read_text()
    assert code == 3, log
    assert "refused the connection" in log
    assert WRONG not in log
    assert TOKEN not in log
