"""The service as real `flows serve` processes: queue-group sharing, crashes, shutdown, rebuild.

Each test runs its own service processes (own subject prefix, stream and data dirs) against the
session's nats-server, drives them over NATS with `FlowsClient`, and reads the log back through the audit subject and
the read models straight from their SQLite files (`flows rebuild` gives the reference model).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from services.client import FlowsClient, Reply
from services.embedded import EmbeddedNats, free_port
from services.nats_flush import flush_all
from tests.integration.bursts import Burst, assert_exactly_once, log_events, workers
from tests.processes import (
    ServiceProcess,
    Target,
    new_target,
    read_model,
    run_flows,
    wait_for_checkpoint,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def target(nats_server: EmbeddedNats, tmp_path: Path) -> Target:
    return new_target(nats_server.url, tmp_path)


async def connect(url: str) -> NatsClient:
    return await nats.connect(url, allow_reconnect=False, name="test-client")


@pytest.fixture
async def nc(target: Target) -> AsyncIterator[NatsClient]:
    client = await connect(target.nats_url)
    try:
        yield client
    finally:
        await client.close()


async def log_end(nc: NatsClient, stream: str) -> int:
    """The stream's last sequence: the position a caught-up read model has applied."""
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.last_seq)


async def rebuilt_model(target: Target, fresh_dir: Path) -> dict[str, Any]:
    """`flows rebuild` into a data dir that has never held a read model, then its rows."""
    result = await run_flows(target.with_data_dir(fresh_dir), "rebuild")
    assert result.returncode == 0, str(result)
    return read_model(fresh_dir / "flows.db")


async def caught_up(client: FlowsClient, position: int) -> None:
    """Until the service's read model has applied the log up to `position`."""
    reply = await client.count(min_position=position, wait_ms=10_000)
    assert reply.status == 200, reply


# -- two processes in one queue group ----------------------------------------------------------


async def service_connections(monitor_url: str) -> dict[int, dict[str, Any]]:
    """The flows services' request connections (cid -> connz entry), from the nats-server
    monitoring endpoint."""

    def fetch() -> Any:
        with urllib.request.urlopen(f"{monitor_url}/connz?subs=1", timeout=5) as response:
            return orjson.loads(response.read())

    connz = await asyncio.to_thread(fetch)
    return {
        conn["cid"]: conn
        for conn in connz.get("connections", [])
        if conn.get("name") == "flows-service"
    }


async def until_subscribed(monitor_url: str, subject: str, instances: int) -> None:
    """Until `instances` service connections subscribe to `subject` (deadline 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        connections = (await service_connections(monitor_url)).values()
        found = [c for c in connections if subject in c.get("subscriptions_list", [])]
        if len(found) == instances:
            return
        assert time.monotonic() < deadline, f"{len(found)} services subscribe to {subject}"
        await asyncio.sleep(0.02)


class TestTwoServicesInOneQueueGroup:
    async def test_concurrent_creates_of_the_same_names_make_one_flow_per_name(
        self, tmp_path: Path
    ) -> None:
        # A nats-server of its own, with monitoring, to see that both processes took requests.
        monitor_port = free_port()
        server = EmbeddedNats(tmp_path / "nats", extra_args=["-m", str(monitor_port)])
        server.start()
        monitor = f"http://127.0.0.1:{monitor_port}"
        try:
            base = new_target(server.url, tmp_path)
            first = ServiceProcess(base.with_data_dir(tmp_path / "a"), "serve-a")
            second = ServiceProcess(base.with_data_dir(tmp_path / "b"), "serve-b")
            async with first, second:
                await asyncio.gather(first.start(), second.start())
                # Both in the queue group before the burst, whichever answered the readiness probe.
                await until_subscribed(monitor, f"{base.prefix}.cmd.create", 2)
                before = {c: n["out_msgs"] for c, n in (await service_connections(monitor)).items()}

                nc = await connect(server.url)
                try:
                    client = FlowsClient(nc, base.prefix)
                    names = [f"shared-{i}" for i in range(10)]
                    requests = [name for name in names for _ in range(10)]
                    random.Random(7).shuffle(requests)
                    replies = await asyncio.gather(*(client.create(n) for n in requests))
                    events = await log_events(client)
                    end = await log_end(nc, base.stream)
                finally:
                    await nc.close()

                after = await service_connections(monitor)
                took = {cid: after[cid]["out_msgs"] - before.get(cid, 0) for cid in after}
                assert len(took) == 2 and all(n > 0 for n in took.values()), took

                by_name: dict[str, list[Reply]] = defaultdict(list)
                for name, reply in zip(requests, replies, strict=True):
                    by_name[name].append(reply)
                for name, answers in by_name.items():
                    statuses = Counter(reply.status for reply in answers)
                    assert statuses == {201: 1, 200: 9}, (name, statuses, answers)
                    # Every answer is the one stored row, unchanged: same id, same timestamps.
                    assert len({orjson.dumps(reply.body) for reply in answers}) == 1, answers
                    assert answers[0].body["name"] == name

                created = [e for e in events if e["type"] == "FlowCreated"]
                assert sorted(e["data"]["name"] for e in created) == sorted(names)
                assert len(events) == len(created), events
                ids = {name: answers[0].body["id"] for name, answers in by_name.items()}
                assert {e["data"]["name"]: e["flow_id"] for e in created} == ids

                # Each process keeps its own SQLite read model; both hold exactly the log's flows.
                await wait_for_checkpoint(first.target.database, end)
                await wait_for_checkpoint(second.target.database, end)
                await first.stop()
                await second.stop()
            model_a = read_model(first.target.database)
            model_b = read_model(second.target.database)
            assert model_a == model_b
            assert {row["name"]: row["id"] for row in model_a["flows"].values()} == ids
            assert model_a["checkpoint"] == [(end,)]
        finally:
            server.stop()


# -- a crash in the middle of a burst ----------------------------------------------------------


class TestKill9DuringABurst:
    async def test_acknowledged_commands_survive_exactly_once_and_retries_get_the_same_reply(
        self, target: Target, nc: NatsClient, tmp_path: Path
    ) -> None:
        acknowledged_before_kill = 90
        # Workers give up at the first unreachable service: the command in flight at the kill
        # has an unknown fate.
        burst = Burst(FlowsClient(nc, target.prefix, timeout=5.0), retry=False)

        service = ServiceProcess(target, "serve-1")
        async with service:
            await service.start()
            async with workers(burst):
                await burst.until_acknowledged(acknowledged_before_kill, timeout_s=30)
                service.kill()

        assert len(burst.acknowledged) >= acknowledged_before_kill
        assert burst.unknown, "the commands in flight at the kill got no reply"

        async with ServiceProcess(target, "serve-2") as restarted:
            await restarted.start()  # same data dir: the read model catches up from its checkpoint
            retry = FlowsClient(nc, target.prefix, timeout=10.0)
            # Every acknowledged command is in the log exactly once; retried with the same
            # Nats-Msg-Id, each gets its original reply, or (unanswered) is applied once.
            events = await assert_exactly_once(retry, burst)
            end = await log_end(nc, target.stream)
            await caught_up(retry, end)
            await restarted.stop()

        live = read_model(target.database)
        assert live == await rebuilt_model(target, tmp_path / "rebuilt")
        assert live["checkpoint"] == [(end,)]
        created = {e["flow_id"] for e in events if e["type"] == "FlowCreated"}
        assert set(live["flows"]) == created


# -- graceful shutdown -------------------------------------------------------------------------


class TestSigterm:
    async def test_requests_sent_before_the_signal_all_get_replies_and_the_exit_is_0(
        self, target: Target, nc: NatsClient
    ) -> None:
        service = ServiceProcess(target)
        async with service:
            await service.start()
            client = FlowsClient(nc, target.prefix)
            seeded = await asyncio.gather(*(client.create(f"seed-{i}") for i in range(30)))
            ids = [reply.raise_for_status().body["id"] for reply in seeded]
            # (subject, body, the status it must get); updates spread over 30 flows, so that
            # optimistic-concurrency retries never run out.
            requests: list[tuple[str, dict[str, Any], str]] = []
            for i in range(150):
                requests += [
                    ("cmd.create", {"name": f"sigterm-{i}", "tags": ["x"]}, "201"),
                    ("cmd.update", {"id": ids[i % len(ids)], "tags": [f"t{i}"]}, "204"),
                    ("query.read", {"id": ids[i % len(ids)]}, "200"),
                    ("query.count", {}, "200"),
                ]

            # Raw publishes with reply subjects, so that "sent" is exact: after the flush the
            # server has routed every one of them to the service's connection.
            inbox = nc.new_inbox()
            replies: dict[int, Msg] = {}
            all_answered = asyncio.Event()

            async def on_reply(msg: Msg) -> None:
                replies[int(msg.subject.rsplit(".", 1)[1])] = msg
                if len(replies) == len(requests):
                    all_answered.set()

            subscription = await nc.subscribe(f"{inbox}.*", cb=on_reply)
            for number, (operation, body, _) in enumerate(requests):
                subject = f"{target.prefix}.{operation}"
                await nc.publish(subject, orjson.dumps(body), reply=f"{inbox}.{number}")
            await flush_all(nc)
            answered_at_signal = len(replies)
            service.signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(8):
                    await all_answered.wait()
            code = await service.wait(timeout_s=15)
            await subscription.unsubscribe()

        total = len(requests)
        assert answered_at_signal < total, "the signal should arrive while requests are in flight"
        missing = sorted(set(range(total)) - set(replies))
        assert not missing, (
            f"{len(missing)} of {total} requests sent (and flushed) before SIGTERM got no reply "
            f"({total - answered_at_signal} were unanswered at the signal; exit code {code}); "
            f"unanswered by subject: {Counter(requests[n][0] for n in missing)}\n{service.log()}"
        )
        # All headers, not just Flows-Status: a NATS no-responders status (503, empty body)
        # would mean the service's subscription was gone when the request reached the server.
        wrong = {
            number: (requests[number][0], msg.headers, msg.data[:200])
            for number, msg in replies.items()
            if (msg.headers or {}).get("Flows-Status") != requests[number][2]
        }
        assert not wrong, (
            f"{len(wrong)} of {total} replies have the wrong status "
            f"({total - answered_at_signal} were unanswered at the signal; exit code {code}); "
            f"first: {dict(sorted(wrong.items())[:5])}\n{service.log()}"
        )
        assert code == 0, service.log()

    async def test_sigterm_while_the_projector_is_behind_exits_0_promptly(
        self, target: Target, nc: NatsClient
    ) -> None:
        """The read model's database is busy (a long write transaction, as a `flows rebuild` of
        the live data dir or a backup would hold) while commands keep appending to the log: the
        projector falls behind with events waiting, and then the service is told to stop."""
        service = ServiceProcess(target)
        async with service:
            await service.start()
            client = FlowsClient(nc, target.prefix)
            busy = sqlite3.connect(target.database, timeout=10, isolation_level=None)
            try:
                busy.execute("BEGIN IMMEDIATE")  # the SQLite write lock
                replies = await asyncio.gather(*(client.create(f"behind-{i}") for i in range(100)))
                assert all(reply.status == 201 for reply in replies), replies
                signalled = time.monotonic()
                service.signal(signal.SIGTERM)
                code = await service.wait(timeout_s=15)
                took = time.monotonic() - signalled
            finally:
                busy.close()

        assert code == 0, service.log()
        # Well inside the 30 s most supervisors wait before SIGKILL (the SQLite busy timeout is 5 s).
        assert took < 10, f"the service took {took:.1f}s to stop after SIGTERM\n{service.log()}"


# -- the read model is disposable ----------------------------------------------------------------


class TestRebuild:
    async def test_the_live_read_model_equals_a_rebuild_after_a_mixed_workload(
        self, target: Target, nc: NatsClient, tmp_path: Path
    ) -> None:
        async with ServiceProcess(target) as service:
            await service.start()
            client = FlowsClient(nc, target.prefix)
            labels: dict[str, Any] = {"team": "data", "n": 3, "ratio": 0.5, "on": False}
            made = await asyncio.gather(
                *(
                    client.create(f"mixed-{i}", tags=[f"t{i % 3}", "all"], labels=labels)
                    for i in range(40)
                ),
                client.create("ünïcode ✓ flow", tags=["ü"], labels=None),
                client.create("no-tags"),
            )
            ids = [reply.raise_for_status().body["id"] for reply in made]
            again = await client.create("mixed-1", tags=["ignored"])  # existing name: 200
            assert again.status == 200 and again.body == made[1].body
            updates = await asyncio.gather(
                *(client.update(i, tags=["updated", "all"]) for i in ids[:10]),
                client.update(ids[10]),  # empty PATCH: only `updated` moves
                client.update(ids[11], tags=[]),
                client.update(ids[12], tags=["dup", "dup"]),
            )
            assert all(reply.status == 204 for reply in updates), updates
            deletes = await asyncio.gather(*(client.delete(i) for i in ids[20:25]))
            assert all(reply.status == 204 for reply in deletes), deletes
            # A deleted flow's name is free again: a new flow with a new id.
            reborn = (await client.create("mixed-20", tags=["reborn"])).raise_for_status()
            assert reborn.status == 201 and reborn.body["id"] != ids[20]
            bulk = await client.bulk_delete(flows={"tags": {"all_": ["t2"]}}, limit=5)
            assert bulk.status == 200 and len(bulk.body["deleted"]) == 5, bulk
            assert (await client.delete(ids[20])).status == 404

            end = await log_end(nc, target.stream)
            await caught_up(client, end)
            live = read_model(target.database)  # read while the service runs (SQLite WAL)
            listed = (await client.filter(limit=200)).raise_for_status().body
            await service.stop()

        rebuilt = await rebuilt_model(target, tmp_path / "rebuilt")
        assert live == rebuilt
        assert live["checkpoint"] == [(end,)]
        assert {row["id"] for row in live["flows"].values()} == {f["id"] for f in listed}
        assert len(listed) == 42 + 1 - 5 - 5


# -- no broker ---------------------------------------------------------------------------------


class TestNoBroker:
    async def test_serve_with_an_explicit_url_where_nothing_listens_exits_3(
        self, target: Target
    ) -> None:
        closed = replace(target, nats_url=f"nats://127.0.0.1:{free_port()}")
        # It waits for NATS first (FLOWS_STARTUP_TIMEOUT_S), as when started along with NATS.
        async with ServiceProcess(closed, FLOWS_STARTUP_TIMEOUT_S="1") as service:
            service.spawn()
            code = await service.wait()
            log = service.log_path.read_text()
        assert code == 3, log
        assert f"waiting for NATS: nothing answers at {closed.nats_url}" in log, log
        assert "gave up waiting for NATS after 1s (FLOWS_STARTUP_TIMEOUT_S)" in log, log
        assert "FLOWS_NATS_URL" in log, log
