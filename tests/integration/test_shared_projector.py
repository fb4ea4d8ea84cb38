"""A shared PostgreSQL read model has one projector at a time (issue 13, item 4).

With real `flows serve` processes on the test's nats-server and a fresh PostgreSQL database per
test: exactly one instance leads (holds the advisory lock) and projects; the others follow its
checkpoint and still answer linearizable reads. A leader killed with SIGKILL under a steady load
is replaced within seconds, every acknowledged command is in the model exactly once and
`flows verify` passes; started again, it rejoins as a follower. Then the leadership module on
its own: two contenders on one database, the holder's connection closed by the server; and a
follower's watcher following the checkpoint by notification, and by its poll when none comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from projections.leadership import ProjectorLeadership, leadership_key
from projections.position_watcher import PositionWatcher
from projections.projector import lock_checkpoint, move_checkpoint
from projections.store import create_schema
from services.embedded import EmbeddedNats
from tests.integration.wire import WireReply, assert_success, call
from tests.processes import ServiceProcess, Target, new_target, run_flows

pytestmark = pytest.mark.postgres

TAKEOVER_LIMIT_S = 5.0  # FLOWS_LEADER_RETRY_S is 1 s: a follower tries the lock every second


@pytest.fixture
def shared_database(postgres_database: str) -> str:
    """The instances' one read model: a fresh PostgreSQL database (tests/conftest.py)."""
    return postgres_database


@contextlib.asynccontextmanager
async def instances(
    nats_server: EmbeddedNats, tmp_path: Path, database_url: str, count: int = 3
) -> AsyncIterator[tuple[Target, list[ServiceProcess], NatsClient]]:
    """`count` `flows serve` processes of one service on one shared PostgreSQL model."""
    target = new_target(nats_server.url, tmp_path)
    processes = [
        ServiceProcess(target, f"serve-{n}", FLOWS_DATABASE_URL=database_url) for n in range(count)
    ]
    nc = await nats.connect(nats_server.url)
    try:
        for process in processes:
            process.spawn()
        await asyncio.gather(*(process.wait_ready() for process in processes))
        yield target, processes, nc
    finally:
        await nc.close()
        for process in processes:
            process.cleanup()


async def discover(
    nc: NatsClient, prefix: str, verb: str, want: int, timeout_s: float = 1.0
) -> dict[int, dict[str, Any]]:
    """pid -> the `$SRV.<verb>` answer of each of this service's instances: one request,
    answers read until `want` have come or the time is up (a dead instance never answers)."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    found: dict[int, dict[str, Any]] = {}
    try:
        await nc.publish(f"$SRV.{verb}.flows", b"", reply=inbox)
        deadline = time.monotonic() + timeout_s
        while len(found) < want and (left := deadline - time.monotonic()) > 0:
            try:
                message = await subscription.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            body = orjson.loads(message.data)
            if body["metadata"].get("subject_prefix") == prefix:
                found[int(body["metadata"]["pid"])] = body
    finally:
        await subscription.unsubscribe()
    return found


async def roles_when(
    nc: NatsClient,
    prefix: str,
    pids: set[int],
    holds: Callable[[dict[int, str]], bool],
    timeout_s: float = 15.0,
) -> dict[int, str]:
    """pid -> projector role of the instances `pids`, once `holds` is true of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        answers = await discover(nc, prefix, "PING", len(pids))
        roles = {pid: body["metadata"]["projector"] for pid, body in answers.items() if pid in pids}
        if set(roles) == pids and holds(roles):
            return roles
        assert time.monotonic() < deadline, f"roles never settled: {roles}"


def one_leader(roles: dict[int, str]) -> bool:
    return sorted(roles.values()) == ["follower"] * (len(roles) - 1) + ["leader"]


async def test_one_instance_projects_and_followers_answer_linearizable_reads(
    nats_server: EmbeddedNats, tmp_path: Path, shared_database: str
) -> None:
    async with instances(nats_server, tmp_path, shared_database) as (target, processes, nc):
        by_pid = {process.pid: process for process in processes}
        roles = await roles_when(nc, target.prefix, set(by_pid), one_leader)
        for pid, role in roles.items():
            said = "projector leadership taken" if role == "leader" else "following the projector"
            await by_pid[pid].wait_for_output(f"{said}")
        prefix = target.prefix
        for i in range(40):
            created = await call(nc, prefix, "cmd.create", {"name": f"f-{i}", "tags": ["a"]})
            assert_success(created, 201)
            flow_id = created.json["id"]
            # No header: each query may reach any instance, and must see the command anyway.
            read = await call(nc, prefix, "query.read", {"id": flow_id})
            assert (read.status, read.json) == (200, created.json), i
            updated = await call(nc, prefix, "cmd.update", {"id": flow_id, "tags": [f"v{i}"]})
            assert_success(updated, 204)
            read = await call(nc, prefix, "query.read", {"id": flow_id})
            assert read.json["tags"] == [f"v{i}"], i
            assert (await call(nc, prefix, "query.count", {})).json == i + 1
        # Per instance: reads answered and their mean time from arrival to reply (which
        # includes the wait for the read model to reach the log's end).
        stats = await discover(nc, prefix, "STATS", len(by_pid))
        reads = {
            pid: next(e for e in body["endpoints"] if e["name"] == "read")
            for pid, body in stats.items()
        }
        for pid, endpoint in reads.items():
            print(
                f"{roles[pid]:8} pid {pid}: {endpoint['num_requests']} reads, mean "
                f"{endpoint['average_processing_time'] / 1e6:.2f} ms"
            )
        followers = [pid for pid, role in roles.items() if role == "follower"]
        # 80 reads spread over three instances: each follower answered some.
        assert all(reads[pid]["num_requests"] > 0 for pid in followers), reads
        report = (await call(nc, prefix, "audit.stats", {})).json
        assert report["projector"] in {"leader", "follower"}, report
        for process in processes:
            await process.stop()


class Load:
    """A client creating and updating flows one command at a time, each with its own
    Nats-Msg-Id and sent again until acknowledged (a retry is exact: the stored reply), then
    reading the flow back with no header. Remembers what every acknowledged command did."""

    def __init__(self, nc: NatsClient, prefix: str) -> None:
        self._nc = nc
        self._prefix = prefix
        self.flows: dict[str, list[str]] = {}  # id -> tags, as the acknowledged commands left them
        self.acknowledged = 0
        self.slowest_read_s = 0.0
        self._progress = asyncio.Condition()

    async def run(self, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            created = await self._command("cmd.create", {"name": f"load-{i}", "tags": ["new"]})
            assert_success(created, 201)
            flow_id = created.json["id"]
            self.flows[flow_id] = ["new"]
            started = time.monotonic()
            read = await self._send("query.read", {"id": flow_id}, {})
            self.slowest_read_s = max(self.slowest_read_s, time.monotonic() - started)
            assert (read.status, read.json) == (200, created.json), (i, read)
            retagged = list(self.flows)[i // 2]
            assert_success(await self._command("cmd.update", {"id": retagged, "tags": [f"u{i}"]}), 204)
            self.flows[retagged] = [f"u{i}"]
            async with self._progress:
                self.acknowledged += 2
                self._progress.notify_all()
            i += 1

    async def until(self, acknowledged: int, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(lambda: self.acknowledged >= acknowledged)

    async def _command(self, operation: str, body: Any) -> WireReply:
        return await self._send(operation, body, {"Nats-Msg-Id": uuid.uuid4().hex})

    async def _send(self, operation: str, body: Any, headers: dict[str, str]) -> WireReply:
        """Sent again (the same headers) while no instance answers: one may have just died."""
        deadline = time.monotonic() + 20
        while True:
            try:
                return await call(self._nc, self._prefix, operation, body, headers, timeout=2.0)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                assert time.monotonic() < deadline, f"{operation} never answered"


async def test_a_killed_leader_is_replaced_within_seconds_and_rejoins_as_a_follower(
    nats_server: EmbeddedNats, tmp_path: Path, shared_database: str
) -> None:
    async with instances(nats_server, tmp_path, shared_database) as (target, processes, nc):
        prefix = target.prefix
        by_pid = {process.pid: process for process in processes}
        roles = await roles_when(nc, prefix, set(by_pid), one_leader)
        leader = by_pid[next(pid for pid, role in roles.items() if role == "leader")]
        load, stop = Load(nc, prefix), asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        try:
            await load.until(40)
            killed_at, acknowledged = time.monotonic(), load.acknowledged
            leader.kill()
            survivors = set(by_pid) - {leader.pid}
            roles = await roles_when(nc, prefix, survivors, one_leader)
            takeover_s = time.monotonic() - killed_at
            heir = by_pid[next(pid for pid, role in roles.items() if role == "leader")]
            await heir.wait_for_output("taking over from the instance that led before")
            await load.until(acknowledged + 40)  # and the load carries on through the new leader
        finally:
            stop.set()
            await running
        print(
            f"takeover {takeover_s:.2f} s after SIGKILL; slowest read under the load "
            f"{load.slowest_read_s * 1000:.0f} ms; {load.acknowledged} commands acknowledged"
        )
        assert takeover_s < TAKEOVER_LIMIT_S
        await assert_caught_up(nc, target, shared_database)
        assert await model_flows(shared_database) == load.flows  # each command exactly once
        verified = await run_flows(target, "verify", FLOWS_DATABASE_URL=shared_database)
        assert verified.returncode == 0, str(verified)

        again = await ServiceProcess(
            target, "serve-again", FLOWS_DATABASE_URL=shared_database
        ).start()
        try:
            roles = await roles_when(nc, prefix, {*survivors, again.pid}, one_leader)
            assert roles[again.pid] == "follower"
            assert roles[heir.pid] == "leader"  # the rejoining instance takes nothing over
            await again.wait_for_output("following the projector of another instance")
            await again.stop()
        finally:
            again.cleanup()


async def assert_caught_up(
    nc: NatsClient, target: Target, database_url: str, timeout_s: float = 10.0
) -> None:
    """Until the shared checkpoint is the log's last position."""
    log_end = (await nc.jetstream().stream_info(target.stream)).state.last_seq
    engine = create_async_engine(database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            async with engine.connect() as conn:
                checkpoint = (
                    await conn.execute(text("SELECT position FROM projection_checkpoint"))
                ).scalar_one()
            if checkpoint == log_end:
                return
            assert time.monotonic() < deadline, f"checkpoint {checkpoint}, log end {log_end}"
            await asyncio.sleep(0.05)  # a look at another process's progress, not a wait on it
    finally:
        await engine.dispose()


async def model_flows(database_url: str) -> dict[str, list[str]]:
    """id -> tags of every flow in the shared model, after checking each tag is indexed once."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            flows = {
                row.id: list(row.tags)
                for row in await conn.execute(text("SELECT id, tags FROM flow"))
            }
            tag_rows = (await conn.execute(text("SELECT count(*) FROM flow_tag"))).scalar_one()
    finally:
        await engine.dispose()
    assert tag_rows == sum(len(set(tags)) for tags in flows.values())
    return flows


# -- the leadership module on its own -----------------------------------------------------------
STREAM = "LEADERSHIP"


class Contender:
    """One instance's leadership, whose "projector" only records when it ran and stopped."""

    def __init__(self, engine: AsyncEngine, retry_s: float) -> None:
        self.watcher = PositionWatcher()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.started_at = self.stopped_at = 0.0
        self.leadership = ProjectorLeadership(
            engine, STREAM, self.watcher, self._project, retry_s=retry_s
        )
        self.task = asyncio.create_task(self.leadership.run())

    def _project(self) -> Coroutine[Any, Any, None]:
        async def project() -> None:
            self.started_at = time.monotonic()
            self.started.set()
            try:
                await asyncio.Event().wait()  # until cancelled
            finally:
                self.stopped_at = time.monotonic()
                self.stopped.set()

        return project()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def engines(url: str, count: int) -> AsyncIterator[list[AsyncEngine]]:
    made = [create_async_engine(url) for _ in range(count)]
    try:
        await create_schema(made[0])
        yield made
    finally:
        for engine in made:
            await engine.dispose()


async def said(caplog: pytest.LogCaptureFixture, text: str, times: int = 1) -> None:
    """Until the leadership has logged `text` `times` times (with a deadline)."""
    deadline = time.monotonic() + 5
    while sum(text in record.getMessage() for record in caplog.records) < times:
        assert time.monotonic() < deadline, f"never logged {text!r}"
        await asyncio.sleep(0.02)  # caplog has no change notification


async def test_closing_the_holders_connection_hands_the_lock_to_the_other(
    shared_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projections.leadership")
    async with engines(shared_database, 3) as (admin, *own):
        contenders = [Contender(engine, retry_s=0.2) for engine in own]
        try:
            waits = [asyncio.ensure_future(c.started.wait()) for c in contenders]
            _, pending = await asyncio.wait(waits, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            for wait in pending:
                wait.cancel()
            await said(caplog, "following the projector of another instance")
            holder, other = sorted(contenders, key=lambda c: not c.started.is_set())
            assert not other.started.is_set()
            assert (holder.leadership.role, other.leadership.role) == ("leader", "follower")
            async with admin.connect() as conn:
                killed = await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks "
                        "WHERE locktype = 'advisory' AND granted "
                        "AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    )
                )
                assert killed.scalars().all() == [True]  # one holder, its session ended
            async with asyncio.timeout(5):
                await holder.stopped.wait()
                await other.started.wait()
            # The old holder stopped before the new one started: never two at once.
            assert holder.stopped_at <= other.started_at
            assert (holder.leadership.role, other.leadership.role) == ("follower", "leader")
            await said(caplog, "taking over from the instance that led before")
            # The old holder connects again and follows; it does not lead again.
            await said(caplog, "following the projector of another instance", times=2)
            assert holder.leadership.role == "follower"
        finally:
            for contender in contenders:
                await contender.close()


@contextlib.asynccontextmanager
async def led_elsewhere(engine: AsyncEngine) -> AsyncIterator[None]:
    """Another instance leads: a connection of `engine` holds the lock until exit."""
    async with engine.connect() as holder:
        schema = (await holder.execute(text("SELECT current_schema()"))).scalar_one()
        key = leadership_key(schema, STREAM)
        await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        await holder.commit()
        yield


async def test_a_follower_hears_each_checkpoint_move_at_once(
    shared_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projections.leadership")
    async with engines(shared_database, 2) as (admin, own), led_elsewhere(admin):
        # Its only poll of the checkpoint comes as it connects: later moves must be heard.
        follower = Contender(own, retry_s=60)
        try:
            await said(caplog, "following the projector of another instance")
            for position in (5, 9, 12):
                async with admin.begin() as conn:
                    await lock_checkpoint(conn)
                    await move_checkpoint(conn, position)
                assert await follower.watcher.wait_for(position, 2.0), position
            assert not follower.started.is_set()
        finally:
            await follower.close()


async def test_a_follower_polls_the_checkpoint_when_no_notification_comes(
    shared_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projections.leadership")
    async with engines(shared_database, 2) as (admin, own), led_elsewhere(admin):
        async with admin.begin() as conn:
            await move_checkpoint(conn, 3)
        follower = Contender(own, retry_s=0.2)
        try:
            await said(caplog, "following the projector of another instance")
            async with admin.begin() as conn:  # moved without a NOTIFY: missed, say
                await conn.execute(text("UPDATE projection_checkpoint SET position = 8"))
            assert await follower.watcher.wait_for(8, 3.0)
        finally:
            await follower.close()
