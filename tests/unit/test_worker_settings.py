"""What each worker of `flows serve --workers N` is given (services/workers.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.settings import Settings
from services.workers import worker_environment


def test_settings_round_trip_through_the_environment(tmp_path: Path) -> None:
    settings = Settings(
        nats_url="nats://127.0.0.1:4001,nats://127.0.0.1:4002",
        subject_prefix="acme",
        data_dir=tmp_path,
        reply_prefixes=("_INBOX.", "_R."),
        nats_user="svc",
        nats_password="pw",
        max_waiting=7,
        workers=3,
    )
    again = Settings.from_env(settings.environment())
    # A worker is given the URL explicitly: it waits for NATS, never embeds a server.
    assert again == dataclasses.replace(settings, nats_url_explicit=True)


@pytest.mark.parametrize("index", [0, 2])
def test_each_worker_has_its_own_replica_and_metrics_port(tmp_path: Path, index: int) -> None:
    settings = Settings(data_dir=tmp_path, workers=3, metrics_addr="127.0.0.1:9464")
    env = worker_environment(settings, index)
    assert env["FLOWS_DATA_DIR"] == str(tmp_path / f"worker-{index}")
    assert env["FLOWS_METRICS_ADDR"] == f"127.0.0.1:{9464 + index}"
    assert env["FLOWS_WORKERS"] == "1"  # a worker never supervises workers of its own


def test_zero_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="FLOWS_WORKERS"):
        Settings(workers=0)
