"""Child processes of a benchmark run: the flows service, the echo responder, peak memory."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nats.aio.client import Client as NatsClient

__all__ = ["Child", "peak_rss_mb", "start_echo", "start_service", "wait_for_answer"]


class Child:
    """A child process that is stopped with SIGTERM (then killed) when the run ends."""

    def __init__(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB; NaN where /proc has no such line."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_service(nats_url: str, data_dir: Path, *args: str, **env: str) -> Child:
    """`flows serve [args]` as a child process (it installs uvloop itself), quiet but for
    warnings."""
    environ = {
        **os.environ,
        "FLOWS_NATS_URL": nats_url,
        "FLOWS_DATA_DIR": str(data_dir),
        "FLOWS_LOG_LEVEL": "WARNING",
        **env,
    }
    process = subprocess.Popen([sys.executable, "-m", "services", "serve", *args], env=environ)
    return Child("flows serve", process)


def start_echo(nats_url: str, subject: str) -> Child:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.echo", nats_url, subject], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        raise RuntimeError("the echo responder did not start; run `python -m benchmarks.echo`")
    return Child("echo", process)


async def wait_for_answer(
    nc: NatsClient,
    subject: str,
    body: bytes,
    child: Child,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
) -> None:
    """Wait until something answers on `subject` (a starting service), or fail after the
    deadline with what to check."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reply = await nc.request(subject, body, timeout=2, headers=headers)
            if (reply.headers or {}).get("Flows-Status", "").startswith("2"):
                return
        except Exception:
            pass
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}; see above")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"nothing answered {subject} within {timeout_s:.0f}s; run `flows serve` by hand "
                "with the same settings to see why"
            )
        await asyncio.sleep(0.1)
