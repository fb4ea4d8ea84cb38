"""A Prefect 3 server on SQLite, the peer the service is compared with over HTTP.

Started from the `bench` extra (`pip install -e '.[bench]'`) as `prefect server start` on a free
loopback port, with its own PREFECT_HOME and SQLite file in a temp dir, API only (no UI, no
background services, no analytics), so it is measured doing just what the service does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.processes import Child
from services.embedded import free_port

__all__ = ["prefect_cli", "start_prefect"]


def prefect_cli() -> str | None:
    """The `prefect` command beside this Python (the bench extra), or None when not installed."""
    beside = Path(sys.executable).parent / "prefect"
    if beside.exists():
        return str(beside)
    return shutil.which("prefect")


def start_prefect(cli: str, home: Path, timeout_s: float = 120.0) -> tuple[Child, str]:
    """Start the server and wait for its health endpoint; returns it and its API URL."""
    import httpx  # comes with prefect

    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    command = [cli, "server", "start", "--host", "127.0.0.1", "--port", str(port),
               "--no-services", "--no-ui", "--analytics-off", "--log-level", "WARNING"]  # fmt: skip
    log_file = (home / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    child = Child("prefect server", process)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                return child, api
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    child.stop()
    raise RuntimeError(
        f"the Prefect server did not become healthy within {timeout_s:.0f}s; "
        f"see {home / 'server.log'}"
    )
