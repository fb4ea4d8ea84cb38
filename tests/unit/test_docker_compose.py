"""docker-compose.yml's topology, checked without Docker: three routed NATS nodes with the one
shipped permission layout and fsync before every ack, PostgreSQL, and three instances each given
the full seed list and an R3 stream. The NATS configuration each node runs is checked by
nats-server itself (`-t`: parse and exit, no socket)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from deploy.nodes import ROUTE_PING_INTERVAL, ROUTE_PING_MAX
from services.embedded import find_nats_server

ROOT = Path(__file__).resolve().parents[2]
NATS_DIR = ROOT / "deploy" / "nats"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def nats_nodes() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).startswith("nats:")
    }


def instances() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def uncommented(path: Path) -> str:
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


class TestNatsNodes:
    def test_three_nodes_of_nats_2_12_each_with_its_own_name_and_store(self) -> None:
        nodes = nats_nodes()
        assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
        assert {node["image"] for node in nodes.values()} == {"nats:2.12-alpine"}
        names = {flag(node["command"], "--server_name") for node in nodes.values()}
        assert names == set(nodes)  # unique JetStream server names, matching the routes
        stores = {v for node in nodes.values() for v in node["volumes"] if v.endswith(":/data")}
        assert len(stores) == 3
        client_ports = {port for node in nodes.values() for port in node["ports"]}
        assert {"4222:4222", "4223:4222", "4224:4222"} <= client_ports

    def test_every_node_runs_the_cluster_config_over_the_one_permission_layout(self) -> None:
        for node in nats_nodes().values():
            assert flag(node["command"], "-c") == "/etc/nats/cluster.conf"
            assert "./deploy/nats:/etc/nats:ro" in node["volumes"]
        cluster = uncommented(NATS_DIR / "cluster.conf")
        assert re.search(r'^include "nats-server\.conf"$', cluster, re.MULTILINE)
        # The permission users live in the included file only: not copied per node.
        assert "permissions" not in cluster
        assert "listen: 0.0.0.0:6222" in cluster
        routes = set(re.findall(r"nats://([\w-]+):6222", cluster))
        assert routes == set(nats_nodes())

    def test_routes_notice_a_hung_node_as_the_plain_processes_recipe_does(self) -> None:
        """deploy/nodes.py explains the values; compose and the recipe must not drift apart."""
        cluster = re.search(r"cluster\s*\{(.*)\}", uncommented(NATS_DIR / "cluster.conf"), re.S)
        assert cluster is not None
        assert re.search(rf'ping_interval:\s*"{ROUTE_PING_INTERVAL}"', cluster.group(1))
        assert re.search(rf"ping_max:\s*{ROUTE_PING_MAX}\b", cluster.group(1))

    def test_jetstream_fsyncs_before_every_acknowledgement(self) -> None:
        layout = uncommented(NATS_DIR / "nats-server.conf")
        jetstream = re.search(r"jetstream\s*\{([^}]*)\}", layout)
        assert jetstream is not None
        assert re.search(r"sync_interval:\s*always", jetstream.group(1))

    def test_every_node_is_given_every_password_the_layout_reads(self) -> None:
        wanted = set(re.findall(r"\$(FLOWS_\w+)", uncommented(NATS_DIR / "nats-server.conf")))
        assert len(wanted) == 4
        for node in nats_nodes().values():
            assert set(node["environment"]) == wanted

    def test_nats_server_accepts_each_nodes_config(self) -> None:
        passwords = {name: "x" for name in nats_nodes()["nats-1"]["environment"]}
        for node in nats_nodes().values():
            arguments = [a for a in node["command"] if a not in ("-m", "8222")]
            arguments[arguments.index("-c") + 1] = str(NATS_DIR / "cluster.conf")
            checked = subprocess.run(
                [find_nats_server(), *arguments, "-t"],
                env=passwords,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            assert checked.returncode == 0, checked.stderr
            assert "is valid" in checked.stderr + checked.stdout


class TestInstances:
    def test_three_instances_with_the_full_seed_list_an_r3_stream_and_postgresql(self) -> None:
        found = instances()
        assert len(found) == 3
        seeds = {f"nats://{node}:4222" for node in nats_nodes()}
        for service in found.values():
            environment = service["environment"]
            assert set(environment["FLOWS_NATS_URL"].split(",")) == seeds
            assert environment["FLOWS_STREAM_REPLICAS"] == "3"
            assert environment["FLOWS_DATABASE_URL"].startswith("postgresql+asyncpg://")
            assert "@postgres:5432/" in environment["FLOWS_DATABASE_URL"]
            assert environment["FLOWS_NATS_USER"] == "flows-service"
            assert environment["FLOWS_NATS_LOG_USER"] == "flows-log"
            assert set(service["depends_on"]) == {*nats_nodes(), "postgres"}

    def test_the_file_says_how_to_run_it(self) -> None:
        head = (ROOT / "docker-compose.yml").read_text().split("\nx-", 1)[0]
        assert "docker compose up" in head
        assert "sync_interval: always" in head and "Jepsen" in head
