"""The plain-processes recipe (`python -m deploy.local_cluster`) as a user runs it: a subprocess
that starts 3 nats-servers and 2 `flows serve` instances, serves a flow through its seed list,
and leaves no process behind after SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import nats

from tests.integration.wire import assert_success, call

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def descendants(pid: int) -> dict[int, bytes]:
    """Every process below `pid` (children, their children: a worker parent's workers), with
    its command line, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The field after the parenthesised command name: state, then the parent.
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, bytes] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in found:
                with contextlib.suppress(OSError):
                    found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes()
                frontier.append(child)
    return found


def still_running(processes: dict[int, bytes]) -> dict[int, bytes]:
    """Those of `processes` that still run (the same command line at the same pid: not a
    reused pid, not a zombie, whose cmdline reads empty)."""
    alive = {}
    for pid, command in processes.items():
        with contextlib.suppress(OSError):
            if (Path("/proc") / str(pid) / "cmdline").read_bytes() == command:
                alive[pid] = command
    return alive


async def read_until(stream: asyncio.StreamReader, prefix: str, said: list[str]) -> str:
    """The first line of the recipe's output that starts with `prefix` (all lines kept in
    `said`, for failure messages)."""
    while True:
        line = (await stream.readline()).decode()
        assert line, "the recipe exited:\n" + "".join(said)
        said.append(line)
        if line.startswith(prefix):
            return line.strip()


async def test_the_recipe_serves_flows_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWS_")}
    recipe = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy.local_cluster",
        "--nodes", "3", "--instances", "2", "--data-dir", str(tmp_path / "cluster"),
        cwd=ROOT, env=environment, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert recipe.stdout is not None
    said: list[str] = []
    children: dict[int, bytes] = {}
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            await read_until(recipe.stdout, "ready:", said)
            seeds = (await read_until(recipe.stdout, "seed list:", said)).split()[-1]
        children = descendants(recipe.pid)
        nodes = [c for c in children.values() if c.split(b"\0")[0].endswith(b"/nats-server")]
        instances = [c for c in children.values() if b"\0services\0serve\0" in c]
        assert (len(nodes), len(instances), len(children)) == (3, 2, 5), children

        nc = await nats.connect(seeds.split(","))
        try:
            created = await call(nc, "flows", "cmd.create", {"name": "recipe", "tags": ["r3"]})
            assert_success(created, 201)
            # Whichever instance answers, it reads the write (linearizable by default).
            for _ in range(4):
                got = await call(nc, "flows", "query.read", {"id": created.json["id"]})
                assert_success(got, 200)
                assert (got.json["name"], got.json["tags"]) == ("recipe", ["r3"])
            info = await nc.jetstream().stream_info("FLOWS")
            assert info.config.num_replicas == 3
        finally:
            await nc.close()

        recipe.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT_S):
            rest, _ = await recipe.communicate()
        said.append(rest.decode())
        assert recipe.returncode == 0, "".join(said)
        assert "stopped" in said[-1], "".join(said)
        assert still_running(children) == {}, "".join(said)
    finally:
        if recipe.returncode is None:
            recipe.kill()
            await recipe.wait()
        for pid in still_running(children):  # only what this test started
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
