"""Helpers for tests that run the service as real processes: `flows serve` and the `flows` CLI.

Every process gets an environment stripped of the caller's FLOWS_* variables and pointed at the
test's own nats-server (never the machine's shared NATS on 4222), subject prefix, stream and data
dir. Waits are bounded by deadlines: a process that does not become ready, exit or answer in time
fails the test with its log, instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nats
import nats.errors
import orjson

__all__ = [
    "FLOWS",
    "CliResult",
    "ServiceProcess",
    "Target",
    "new_target",
    "read_model",
    "rebuild_into",
    "run_flows",
    "wait_for_checkpoint",
]

# The `flows` entry point installed beside this Python.
FLOWS = str(Path(sys.executable).parent / "flows")

READY_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where a service lives: the test's NATS, a subject prefix, a stream and a data dir."""

    nats_url: str
    prefix: str
    stream: str
    data_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The process environment: the caller's minus FLOWS_*, plus this target's settings."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("FLOWS_")}
        env.update(
            FLOWS_NATS_URL=self.nats_url,
            FLOWS_SUBJECT_PREFIX=self.prefix,
            FLOWS_STREAM=self.stream,
            FLOWS_DATA_DIR=str(self.data_dir),
        )
        env.update(extra)
        return env

    def with_data_dir(self, data_dir: Path) -> Target:
        return replace(self, data_dir=data_dir)

    @property
    def database(self) -> Path:
        return self.data_dir / "flows.db"


def log_tail(path: Path, tail: int) -> str:
    """The last `tail` lines of a process's log file, headed by its path, for a failure message."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return f"--- {path} (last {tail} lines)\n" + "\n".join(lines[-tail:])


def new_target(nats_url: str, base_dir: Path) -> Target:
    """A target with its own prefix and stream (so tests sharing the nats-server never meet)."""
    tag = uuid.uuid4().hex[:10]
    return Target(nats_url, f"p{tag}", f"P{tag}", base_dir / "data")


@dataclass(frozen=True, slots=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return orjson.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        return [orjson.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def __str__(self) -> str:
        return (
            f"`flows {' '.join(self.args)}` exited {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


async def run_flows(
    target: Target, *args: str, timeout_s: float = CLI_TIMEOUT_S, **extra_env: str
) -> CliResult:
    """Run `flows ARGS...` against `target` and wait (with a deadline) for it to exit."""
    process = await asyncio.create_subprocess_exec(
        FLOWS,
        *args,
        env=target.env(**extra_env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"`flows {' '.join(args)}` did not exit within {timeout_s}s") from None
    assert process.returncode is not None
    return CliResult(args, process.returncode, stdout.decode(), stderr.decode())


class ServiceProcess:
    """`flows serve` as a child process (its own session), logging to a file in its data dir."""

    def __init__(self, target: Target, name: str = "serve", **extra_env: str) -> None:
        self.target = target
        self.name = name
        self.extra_env = extra_env
        self.log_path = target.data_dir.parent / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def spawn(self) -> Self:
        """Start the process without waiting for it to be ready."""
        assert self._process is None, "already started"
        self.target.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [FLOWS, "serve"],
                env=self.target.env(**self.extra_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    async def start(self, timeout_s: float = READY_TIMEOUT_S) -> Self:
        self.spawn()
        await self.wait_ready(timeout_s)
        return self

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the service answers a `count` request with 200 (it answers queries only once
        its read model has caught up with the log as it was at start-up)."""
        deadline = time.monotonic() + timeout_s
        nc = await nats.connect(self.target.nats_url, allow_reconnect=False, name="ready-probe")
        try:
            while True:
                code = self.returncode
                if code is not None:
                    raise AssertionError(
                        f"{self.name} exited with code {code} before it was ready\n{self.log()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name} did not answer `count` within {timeout_s}s\n{self.log()}"
                    )
                try:
                    reply = await nc.request(
                        f"{self.target.prefix}.query.count", b"", timeout=min(1.0, remaining)
                    )
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    reply = None
                if reply is not None and (reply.headers or {}).get("Flows-Status") == "200":
                    return
                # Nobody subscribed yet (no-responders comes back at once): look again shortly.
                await asyncio.sleep(0.02)
        finally:
            await nc.close()

    async def wait_for_output(self, text: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until `text` appears in the process's log (e.g. a start-up that says it waits)."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log_path.read_text(errors="replace"):
            if self.returncode is not None:  # it may have said it just before exiting
                said = text in self.log_path.read_text(errors="replace")
                assert said, (
                    f"{self.name} exited with code {self.returncode}, never saying {text!r}\n{self.log()}"
                )
                return
            assert time.monotonic() < deadline, (
                f"{self.name} did not say {text!r} within {timeout_s}s\n{self.log()}"
            )
            await asyncio.sleep(0.05)  # a file has no change notification here: look again

    def signal(self, signum: int) -> None:
        assert self._process is not None and self._process.poll() is None, "not running"
        self._process.send_signal(signum)

    async def wait(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        assert self._process is not None
        try:
            return await asyncio.to_thread(self._process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout_s}s\n{self.log()}"
            ) from None

    async def terminate(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """SIGTERM, then the exit code (with a deadline)."""
        self.signal(signal.SIGTERM)
        return await self.wait(timeout_s)

    async def stop(self, timeout_s: float = EXIT_TIMEOUT_S) -> None:
        """SIGTERM and insist on the contract's clean exit: code 0."""
        code = await self.terminate(timeout_s)
        assert code == 0, f"{self.name} exited with {code} after SIGTERM\n{self.log()}"

    def kill(self) -> None:
        """SIGKILL, as a crash would; returns once the process is gone."""
        assert self._process is not None
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()

    def cleanup(self) -> None:
        """Whatever happened, leave no process behind."""
        if self._process is not None and self._process.poll() is None:
            self.kill()

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def log(self, tail: int = 60) -> str:
        return log_tail(self.log_path, tail)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


# -- the read model, read straight from its SQLite file ---------------------------------------
FLOW_COLUMNS = ("id", "name", "tags", "labels", "created", "updated", "version")


def read_model(database: Path) -> dict[str, Any]:
    """The flow rows (every column, JSON decoded), the tag index, the kept counts and the
    checkpoint of a SQLite read model, in a form two read models can be compared with `==`."""
    assert database.exists(), f"no read model at {database}"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        flows = {
            row[0]: {
                **dict(zip(FLOW_COLUMNS, row, strict=True)),
                "tags": orjson.loads(row[2]),
                "labels": None if row[3] is None else orjson.loads(row[3]),
            }
            for row in db.execute(f"SELECT {', '.join(FLOW_COLUMNS)} FROM flow ORDER BY id")
        }
        tags = sorted(db.execute("SELECT flow_id, tag FROM flow_tag"))
        counts = db.execute("SELECT id, flows FROM flow_count").fetchall()
        tag_counts = sorted(db.execute("SELECT tag, flows FROM flow_tag_count"))
        checkpoint = db.execute("SELECT position FROM projection_checkpoint").fetchall()
    return {
        "flows": flows,
        "flow_tags": tags,
        "counts": counts,
        "tag_counts": tag_counts,
        "checkpoint": checkpoint,
    }


def checkpoint_of(database: Path) -> int:
    """The last log position a SQLite read model has applied (0 before its first batch)."""
    if not database.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        try:
            row = db.execute("SELECT position FROM projection_checkpoint").fetchone()
        except sqlite3.OperationalError:  # the schema is not created yet
            return 0
    return int(row[0]) if row else 0


async def wait_for_checkpoint(database: Path, position: int, timeout_s: float = 10.0) -> None:
    """Until the read model in `database` has applied the log up to `position`: for a process
    that a query cannot be aimed at (several instances answer one queue group)."""
    deadline = time.monotonic() + timeout_s
    while (applied := checkpoint_of(database)) < position:
        assert time.monotonic() < deadline, (
            f"the read model {database} applied the log up to {applied}, not {position}, "
            f"within {timeout_s}s"
        )
        await asyncio.sleep(0.02)


async def rebuild_into(target: Target, fresh_dir: Path) -> dict[str, Any]:
    """`flows rebuild` into a data dir that has never held a read model, then its rows: the
    reference a live read model must equal."""
    result = await run_flows(target.with_data_dir(fresh_dir), "rebuild")
    assert result.returncode == 0, str(result)
    return read_model(fresh_dir / "flows.db")
