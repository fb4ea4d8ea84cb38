"""`flows serve` instances as plain processes, each given the cluster's full seed list.

An instance is one `flows serve` (or, with `workers`, one parent of N worker processes) in its
own session, logging to a file: the recipe stops instances itself, in order, before the nodes,
so a Ctrl-C in the terminal must not reach them at the same moment as it reaches the recipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["READY_LINE", "Instance", "ServiceCredentials", "instance_environment", "stop_all"]

# What `flows serve` logs (INFO) once it answers; a `--workers N` parent's log holds N of them.
READY_LINE = "flows service ready on"


@dataclass(frozen=True, slots=True)
class ServiceCredentials:
    """The two users the service signs in as under the shipped permission layout."""

    service_password: str
    log_password: str

    def environment(self) -> dict[str, str]:
        return {
            "FLOWS_NATS_USER": "flows-service",
            "FLOWS_NATS_PASSWORD": self.service_password,
            "FLOWS_NATS_LOG_USER": "flows-log",
            "FLOWS_NATS_LOG_PASSWORD": self.log_password,
        }


def instance_environment(
    seed_list: str,
    data_dir: Path,
    *,
    replicas: int = 3,
    database_url: str | None = None,
    workers: int = 1,
    credentials: ServiceCredentials | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one instance: the caller's without its FLOWS_* settings (a stray
    FLOWS_DATABASE_URL must not turn per-instance SQLite into a shared model), then the
    recipe's, then `extra` (e.g. FLOWS_LOG_LEVEL, FLOWS_STREAM)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWS_")}
    environment.update(
        FLOWS_NATS_URL=seed_list,
        FLOWS_DATA_DIR=str(data_dir),
        FLOWS_STREAM_REPLICAS=str(replicas),
        FLOWS_WORKERS=str(workers),
        FLOWS_LOG_LEVEL="INFO",
    )
    if database_url is not None:
        environment["FLOWS_DATABASE_URL"] = database_url
    if credentials is not None:
        environment.update(credentials.environment())
    environment.update(extra or {})
    return environment


class Instance:
    """One `flows serve` child process; `start()` returns at once (see `wait_ready`)."""

    def __init__(self, name: str, environment: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.environment = environment
        self.log_path = log_path
        self.workers = int(environment.get("FLOWS_WORKERS", "1"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        Path(self.environment["FLOWS_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "services", "serve"],
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        """Whether every worker has logged that it answers (needs FLOWS_LOG_LEVEL INFO)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return text.count(READY_LINE) >= self.workers

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.returncode} at start; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} not ready in {timeout_s:.0f}s; see {self.log_path}"
                )
            time.sleep(0.05)  # a log file has no change notification: look again shortly

    def terminate(self) -> None:
        """SIGTERM: the instance drains what it received and exits 0."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = 40.0) -> int | None:
        """The exit code, after SIGKILL if it has not exited within `timeout_s`."""
        process = self._process
        if process is None:
            return None
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop(self, timeout_s: float = 40.0) -> int | None:
        self.terminate()
        return self.wait(timeout_s)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def stop_all(instances: list[Instance], timeout_s: float = 40.0) -> dict[str, int | None]:
    """SIGTERM to every instance at once, then each one's exit code: they drain in parallel."""
    for instance in instances:
        instance.terminate()
    return {instance.name: instance.wait(timeout_s) for instance in instances}
