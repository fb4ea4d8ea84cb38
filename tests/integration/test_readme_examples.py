"""The README's examples run as written, against a real nats-server and service (docs as
tests): a change that breaks what the README shows fails here."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from nats.aio.client import Client as NatsClient

from services.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def example(name: str) -> str:
    """The python block after `<!-- example: NAME -->` in the README."""
    found = re.search(
        rf"<!-- example: {re.escape(name)} -->\n```python\n(.*?)\n```", README.read_text(), re.S
    )
    assert found, f"no example {name!r} in the README"
    return found.group(1)


async def test_the_client_example_runs_as_shown(service: Settings, nc: NatsClient) -> None:
    env = {
        "FLOWS_NATS_URL": service.nats_url,
        "FLOWS_SUBJECT_PREFIX": service.subject_prefix,
        "PATH": "/usr/bin:/bin",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", example("client"), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().splitlines() == ["['etl']", "gone: Flow not found"]
