"""The docker-compose topology as plain processes on one machine, no Docker: a NATS cluster of
routed nats-servers (JetStream, `sync_interval: always`), the event log as an R3 stream, and N
`flows serve` instances, each given the full seed list; SQLite per instance, or one shared
PostgreSQL read model with `--database-url`.

    .venv/bin/python -m deploy.local_cluster [--nodes 3] [--instances 2] [--workers 1]
        [--data-dir .flows-cluster] [--base-port 4222] [--database-url postgresql+asyncpg://…]
        [--permissions]

Runs in the foreground and prints the seed list; Ctrl-C or SIGTERM stops the instances (each
drains) and then the nodes. Data stays in the data dir, so a second start resumes the log.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from deploy.instances import Instance, ServiceCredentials, instance_environment, stop_all
from deploy.nodes import PERMISSIONS_CONFIG, cluster_nodes
from services.embedded import EmbeddedNats

__all__ = ["main", "run"]

CLUSTER_NAME = "flows"
# The shipped permission layout reads these from nats-server's environment.
_PASSWORDS = ("SERVICE", "LOG", "CLIENT", "AUDITOR")


def _say(text: str) -> None:
    print(text, flush=True)


def _ensure_passwords() -> set[str]:
    """Give every user of the layout a FLOWS_<USER>_PASSWORD: the caller's, else a random one
    put into this process's environment, which the nats-servers inherit. The generated names."""
    generated = set()
    for user in _PASSWORDS:
        name = f"FLOWS_{user}_PASSWORD"
        if name not in os.environ:
            os.environ[name] = secrets.token_urlsafe(18)
            generated.add(name)
    return generated


def _wait_until(ready: Callable[[], bool], timeout_s: float, stopping: threading.Event) -> bool:
    """True once `ready()`, False when asked to stop first; RuntimeError past the deadline."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready within {timeout_s:.0f}s")
        if stopping.wait(0.05):
            return False
    return True


def _instances(args: argparse.Namespace, seed_list: str, base: Path) -> list[Instance]:
    credentials = None
    if args.permissions:
        credentials = ServiceCredentials(
            os.environ["FLOWS_SERVICE_PASSWORD"], os.environ["FLOWS_LOG_PASSWORD"]
        )
    built = []
    for number in range(1, args.instances + 1):
        name = f"flows-{number}"
        environment = instance_environment(
            seed_list,
            base / name,
            replicas=args.replicas,
            database_url=args.database_url,
            workers=args.workers,
            credentials=credentials,
            extra={"FLOWS_STARTUP_TIMEOUT_S": str(args.startup_timeout)},
        )
        built.append(Instance(name, environment, base / f"{name}.log"))
    return built


def _all_ready(instances: list[Instance]) -> bool:
    """Whether every instance answers; RuntimeError when one has exited at start-up."""
    for instance in instances:
        if instance.returncode is not None:
            raise RuntimeError(f"{instance.name} exited; see {instance.log_path}")
    return all(instance.ready() for instance in instances)


def _print_connect(
    args: argparse.Namespace, seed_list: str, base: Path, generated: set[str]
) -> None:
    model = "PostgreSQL, shared" if args.database_url else "SQLite, one per instance"
    _say(
        f"ready: {args.nodes} nats-servers (cluster {CLUSTER_NAME!r}, stream FLOWS with "
        f"{args.replicas} replicas), {args.instances} flows instances x {args.workers} "
        f"worker(s), read model: {model}"
    )
    _say(f"seed list: {seed_list}")
    _say("connect:")
    _say(f"  export FLOWS_NATS_URL={seed_list}")
    if args.permissions:
        _say("  export FLOWS_NATS_USER=flows-client FLOWS_NATS_PASSWORD=$FLOWS_CLIENT_PASSWORD")
        if "FLOWS_CLIENT_PASSWORD" in generated:  # the caller cannot know it otherwise
            _say(f"  (generated: FLOWS_CLIENT_PASSWORD={os.environ['FLOWS_CLIENT_PASSWORD']})")
    _say("  flows create my-flow --tag demo && flows ls")
    _say(f"logs: {base}/flows-<n>.log, {base}/nats/n<i>/nats-server.log")
    _say("Ctrl-C or SIGTERM stops everything.")


def _watch(nodes: list[EmbeddedNats], instances: list[Instance], stopping: threading.Event) -> None:
    """Until asked to stop, say once of each child that it exited by itself (a node killed by
    hand for a fault experiment, an instance that gave up): the rest keeps running."""
    reported: set[str] = set()
    while not stopping.wait(0.2):
        children = [(f"nats-server n{i}", node.returncode) for i, node in enumerate(nodes)]
        children += [(instance.name, instance.returncode) for instance in instances]
        for name, code in children:
            if code is not None and name not in reported:
                reported.add(name)
                _say(f"{name} exited with code {code}")


def run(args: argparse.Namespace, stopping: threading.Event) -> int:
    """Start everything, wait for `stopping`, stop everything; the exit code."""
    base = args.data_dir.resolve()
    config = PERMISSIONS_CONFIG if args.permissions else None
    # Before the nodes start: they read the passwords from their environment.
    generated = _ensure_passwords() if args.permissions else set()
    nodes = cluster_nodes(
        base / "nats",
        args.nodes,
        CLUSTER_NAME,
        base_port=args.base_port,
        sync_interval=None if args.sync_interval == "default" else args.sync_interval,
        config=config,
    )
    seed_list = ",".join(node.url for node in nodes)
    instances = _instances(args, seed_list, base)
    code = 0
    try:
        for index, node in enumerate(nodes):
            node.start()
            _say(f"nats-server n{index} on {node.url} (data in {node.store_dir})")
        for instance in instances:
            instance.start()
            _say(f"{instance.name} starting (pid {instance.pid}, log {instance.log_path})")
        if _wait_until(lambda: _all_ready(instances), args.startup_timeout + 30, stopping):
            _print_connect(args, seed_list, base, generated)
            _watch(nodes, instances, stopping)
    except RuntimeError as exc:
        _say(f"could not start: {exc}")
        code = 1
    finally:
        _say("stopping the instances, then the nats-servers")
        exits = stop_all(instances)
        for node in nodes:
            node.stop()
        if any(exit_code not in (0, None) for exit_code in exits.values()):
            _say(f"instance exit codes: {exits}")
            code = code or 1
    _say("stopped")
    return code


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local_cluster",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=3, help="nats-servers in the cluster")
    parser.add_argument("--instances", type=int, default=2, help="`flows serve` processes")
    parser.add_argument("--workers", type=int, default=1, help="`flows serve --workers` each")
    parser.add_argument("--replicas", type=int, help="stream replicas (default: min(3, nodes))")
    parser.add_argument("--data-dir", type=Path, default=Path(".flows-cluster"))
    parser.add_argument(
        "--base-port", type=int, help="client ports N.., route ports N+2000.. (default: free)"
    )
    parser.add_argument("--database-url", help="a shared PostgreSQL read model (else SQLite)")
    parser.add_argument(
        "--permissions", action="store_true",
        help="the shipped permission layout (deploy/nats/nats-server.conf); passwords from "
        "FLOWS_{SERVICE,LOG,CLIENT,AUDITOR}_PASSWORD, random where unset",
    )  # fmt: skip
    parser.add_argument(
        "--sync-interval", default="always", help="JetStream fsync: always, a duration, default"
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds")
    args = parser.parse_args(argv)
    if args.replicas is None:
        args.replicas = min(3, args.nodes)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    return run(args, stopping)


if __name__ == "__main__":
    sys.exit(main())
