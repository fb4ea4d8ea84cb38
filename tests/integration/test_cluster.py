"""Running against a NATS cluster (issue 13): seed lists and a start-up that waits.

Real processes only: `flows serve` and the `flows` CLI as subprocesses, nats-servers from
tests/cluster.py on free loopback ports.
"""

from __future__ import annotations

from pathlib import Path

import nats

from services.embedded import EmbeddedNats, free_port
from tests.cluster import NatsCluster
from tests.processes import ServiceProcess, new_target, run_flows

# Start-up may wait this long here: several times what a 3-node cluster needs to form.
STARTUP_TIMEOUT_S = "60"


class TestSeedList:
    async def test_serve_and_the_cli_work_with_dead_seeds_before_a_live_one(
        self, nats_server: EmbeddedNats, tmp_path: Path
    ) -> None:
        # Nothing listens on the dead seeds' ports. nats-py shuffles the list, so a dead seed
        # is usually tried first; the service's own "does NATS answer" check goes in order.
        dead = [f"nats://127.0.0.1:{free_port()}" for _ in range(3)]
        seeds = ",".join([*dead, nats_server.url])
        target = new_target(nats_server.url, tmp_path)
        async with ServiceProcess(target, FLOWS_NATS_URL=seeds) as service:
            await service.start()
            created = await run_flows(target, "create", "seeded", "--json", FLOWS_NATS_URL=seeds)
            assert created.returncode == 0, str(created)
            got = await run_flows(target, "get", "--name", "seeded", "--json", "--nats-url", seeds)
            assert got.returncode == 0, str(got)
            assert got.json()["id"] == created.json()["id"]
            replayed = await run_flows(target, "replay", "--nats-url", seeds)
            assert replayed.returncode == 0, str(replayed)
            assert [event["type"] for event in replayed.json_lines()] == ["FlowCreated"]
            await service.stop()
        assert "Traceback" not in service.log_path.read_text()


class TestClusterStartUp:
    async def test_a_service_started_before_the_cluster_forms_waits_then_serves(
        self, tmp_path: Path
    ) -> None:
        async with NatsCluster(tmp_path / "cluster") as cluster:
            await cluster.start(0)
            target = new_target(cluster.url(0), tmp_path)
            environment = {
                "FLOWS_NATS_URL": cluster.seed_list,
                "FLOWS_STREAM_REPLICAS": "3",
                "FLOWS_STARTUP_TIMEOUT_S": STARTUP_TIMEOUT_S,
            }
            async with ServiceProcess(target, **environment) as service:
                service.spawn()
                # One server of three: JetStream has no leader, and says nothing or "not yet".
                await service.wait_for_output("waiting for JetStream")
                await cluster.start(1)
                # Two: a leader, but three replicas cannot be placed; the line says so.
                await service.wait_for_output(
                    "waiting for JetStream: no suitable peers yet for 3 replicas", 30
                )
                await service.wait_for_output("2 of 3 servers seen", 30)
                assert service.returncode is None, service.log()
                await cluster.start(2)
                await service.wait_ready(timeout_s=30)

                created = await run_flows(target, "create", "clustered", "--tag", "r3", "--json")
                assert created.returncode == 0, str(created)
                got = await run_flows(target, "get", created.json()["id"], "--json")
                assert got.returncode == 0, str(got)
                assert (got.json()["name"], got.json()["tags"]) == ("clustered", ["r3"])

                nc = await nats.connect(cluster.seed_list.split(","))
                try:
                    info = await nc.jetstream().stream_info(target.stream)
                finally:
                    await nc.close()
                assert info.config.num_replicas == 3
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2
                await service.stop()
            log = service.log_path.read_text()
            assert "JetStream is ready, after" in log, log
            assert "Traceback" not in log, log


class TestStoppingWhileWaiting:
    """SIGTERM during start-up's wait ends it (docker stop must not wait out the limit)."""

    async def test_sigterm_while_waiting_for_nats_exits_0_at_once(self, tmp_path: Path) -> None:
        nowhere = f"nats://127.0.0.1:{free_port()}"
        target = new_target(nowhere, tmp_path)
        async with ServiceProcess(target, FLOWS_STARTUP_TIMEOUT_S=STARTUP_TIMEOUT_S) as service:
            service.spawn()
            await service.wait_for_output("waiting for NATS")
            assert await service.terminate(timeout_s=10) == 0, service.log()
        assert "stopping while starting" in service.log_path.read_text()

    async def test_sigterm_while_waiting_for_jetstream_exits_0_at_once(
        self, tmp_path: Path
    ) -> None:
        async with NatsCluster(tmp_path / "cluster") as cluster:
            await cluster.start(0)  # one of three: JetStream cannot answer
            target = new_target(cluster.url(0), tmp_path)
            async with ServiceProcess(
                target,
                FLOWS_STREAM_REPLICAS="3",
                FLOWS_STARTUP_TIMEOUT_S=STARTUP_TIMEOUT_S,
            ) as service:
                service.spawn()
                await service.wait_for_output("waiting for JetStream")
                assert await service.terminate(timeout_s=10) == 0, service.log()
            log = service.log_path.read_text()
            assert "stopping while starting" in log, log
            assert "Traceback" not in log, log
