"""NATS cluster nodes as plain processes: nats-servers routed into one cluster, JetStream on.

Each node is an `EmbeddedNats` (the service's own nats-server wrapper) with a free or given
loopback client port, its own route port and its own store dir; every node lists every other
node's route port, so the cluster forms whichever nodes start first, and a node stopped and
started again rejoins with its data. Used by `deploy.local_cluster`, `tests/cluster.py` and the
cluster benchmark, so all three run the same topology.

Routes ping each other every second and give a peer up after two unanswered pings
(`ROUTE_PING_INTERVAL`, `ROUTE_PING_MAX`; deploy/nats/cluster.conf says the same for
docker-compose). A hung server (SIGSTOP, a stalled VM, a partition that leaves its TCP
connections open) cannot send UNSUBs: until the other servers close their routes to it, they
keep its subscriptions, among them the service instances' queue-group interest, and route about
half of the requests to it, where they are lost. nats-server notices a dead route only by its
pings: `cluster { ping_interval }` (else the top-level one, 2 min by default, capped at 30 s
for routes: nats-server server/client.go `adjustPingInterval`, server/route.go
`defaultRouteMaxPingInterval`), closing the route on the timer tick that would put more than
`ping_max` pings outstanding (server/client.go `processPingTimer`): 60-90 s by default, 2-3 s
here. That is below the service's own move off a hung server (its client pings every 2 s,
gone after two unanswered: 4-6 s) and below a stream election (4-9 s, raft.go's fixed
election timeout), so stale interest never outlasts them; a route of a healthy server that is
merely busy answers a PING from its read loop at once, and a route closed in error reconnects
within a second. The write deadline does not notice a hung peer: nats-server keeps a route
open when a write times out part-way (`write_timeout` defaults to "retry" for routes,
server/client.go `handleWriteTimeout`), and at this load the socket buffer never fills.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.embedded import DEFAULT_SYNC_INTERVAL, EmbeddedNats, free_port

__all__ = [
    "PERMISSIONS_CONFIG",
    "ROUTE_PING_INTERVAL",
    "ROUTE_PING_MAX",
    "ClusterPorts",
    "cluster_arguments",
    "cluster_node",
    "cluster_nodes",
    "route_settings",
]

# The shipped permission layout (four users, passwords from the environment); docker-compose
# mounts the same file, so there is one layout to keep right.
PERMISSIONS_CONFIG = Path(__file__).resolve().parent / "nats" / "nats-server.conf"


# How often a node pings each route, and how many unanswered pings close it (see above).
ROUTE_PING_INTERVAL = "1s"
ROUTE_PING_MAX = 2


def route_settings() -> list[str]:
    """The cluster settings that have no command-line flag, as configuration lines (the
    `--cluster`/`--routes` flags apply over this block)."""
    return [
        "cluster {",
        f'  ping_interval: "{ROUTE_PING_INTERVAL}"',
        f"  ping_max: {ROUTE_PING_MAX}",
        "}",
    ]


@dataclass(frozen=True, slots=True)
class ClusterPorts:
    """The client and route port of every node, in node order."""

    clients: tuple[int, ...]
    routes: tuple[int, ...]

    @classmethod
    def pick(cls, size: int, base_port: int | None = None) -> ClusterPorts:
        """Free loopback ports, or `base_port + i` for clients and `base_port + 2000 + i` for
        routes (4222 gives NATS's usual 4222/6222 for the first node)."""
        if base_port is None:
            return cls(
                tuple(free_port() for _ in range(size)), tuple(free_port() for _ in range(size))
            )
        return cls(
            tuple(base_port + i for i in range(size)),
            tuple(base_port + 2000 + i for i in range(size)),
        )


def cluster_arguments(index: int, cluster_name: str, route_ports: tuple[int, ...]) -> list[str]:
    """nats-server's flags for node `index`: its name, the cluster's, where it listens for
    routes and the route of every other node."""
    own = route_ports[index]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports if port != own)
    return [
        # JetStream in a cluster needs a stable, unique name per server.
        "--server_name", f"n{index}",
        "--cluster_name", cluster_name,
        "--cluster", f"nats://127.0.0.1:{own}",
        "--routes", routes,
    ]  # fmt: skip


def cluster_node(
    store_dir: Path,
    index: int,
    cluster_name: str,
    ports: ClusterPorts,
    *,
    sync_interval: str | None = DEFAULT_SYNC_INTERVAL,
    config: Path | None = None,
) -> EmbeddedNats:
    """Node `index` of the cluster, not started. `sync_interval` "always" fsyncs before every
    acknowledgement (see deploy/nats/nats-server.conf for why); `config` is included first,
    e.g. PERMISSIONS_CONFIG."""
    return EmbeddedNats(
        store_dir,
        port=ports.clients[index],
        extra_args=cluster_arguments(index, cluster_name, ports.routes),
        sync_interval=sync_interval,
        config=config,
        config_lines=route_settings(),
    )


def cluster_nodes(
    base_dir: Path,
    size: int,
    cluster_name: str,
    *,
    base_port: int | None = None,
    sync_interval: str | None = DEFAULT_SYNC_INTERVAL,
    config: Path | None = None,
) -> list[EmbeddedNats]:
    """`size` nodes named n0, n1, ... with store dirs `base_dir/n<i>`; none is started."""
    ports = ClusterPorts.pick(size, base_port)
    return [
        cluster_node(
            base_dir / f"n{index}",
            index,
            cluster_name,
            ports,
            sync_interval=sync_interval,
            config=config,
        )
        for index in range(size)
    ]
