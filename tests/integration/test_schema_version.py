"""Upgrades rebuild the read model (issue 12, item 5): the model records its schema version, and
an instance that finds a model of another version, or of none (written before versions were
recorded, as by the code of 2026-12-01), rebuilds it from the log before it answers a query.

Real processes: `flows serve` and the `flows` CLI on a test nats-server, SQLite read models.
The model is damaged as well as marked old, so that only a rebuild from the log can answer right.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from projections.tables import SCHEMA_VERSION
from services.embedded import EmbeddedNats
from tests.processes import ServiceProcess, Target, new_target, read_model, rebuild_into, run_flows

REBUILDING = "rebuilding it from the event log before answering queries"


async def written_by_a_service(target: Target) -> list[str]:
    """Three flows, one updated and one deleted, by a service that then stops."""
    async with ServiceProcess(target) as service:
        await service.start()
        ids = []
        for name in ("kept", "updated", "deleted"):
            created = await run_flows(target, "create", name, "--tag", "t", "--json")
            assert created.returncode == 0, str(created)
            ids.append(created.json()["id"])
        for command in (("update", ids[1], "--tag", "u"), ("delete", ids[2])):
            done = await run_flows(target, *command)
            assert done.returncode == 0, str(done)
        await service.stop()
    assert REBUILDING not in service.log_path.read_text()  # a fresh model is current
    return ids


def stored_version(database: Path) -> int | None:
    with contextlib.closing(sqlite3.connect(database)) as db:
        try:
            row = db.execute("SELECT version FROM read_model_version").fetchone()
        except sqlite3.OperationalError:  # no such table
            return None
    return None if row is None else int(row[0])


def age(database: Path, version: int | None) -> None:
    """Make the model look written by other code, and wrong: only a rebuild can put it right."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        if version is None:  # today's code: no version table at all
            db.execute("DROP TABLE read_model_version")
        else:
            db.execute("UPDATE read_model_version SET version = ?", (version,))
        if version is None or version < 3:  # the kept counts came with version 3
            db.execute("DROP TABLE flow_count")
            db.execute("DROP TABLE flow_tag_count")
        db.execute(
            "DELETE FROM flow_tag WHERE flow_id IN (SELECT id FROM flow WHERE name = 'kept')"
        )
        db.execute("DELETE FROM flow WHERE name = 'kept'")
        db.commit()


@pytest.mark.parametrize(
    "found",
    [None, SCHEMA_VERSION - 1, SCHEMA_VERSION + 1],
    ids=["written-before-versions", "older", "unknown-newer"],
)
async def test_a_model_of_another_version_is_rebuilt_before_the_first_answer(
    nats_server: EmbeddedNats, tmp_path: Path, found: int | None
) -> None:
    target = new_target(nats_server.url, tmp_path)
    ids = await written_by_a_service(target)
    assert stored_version(target.database) == SCHEMA_VERSION
    age(target.database, found)

    async with ServiceProcess(target) as service:
        await service.start()
        # The first query already sees the rebuilt model: the damaged row is back.
        got = await run_flows(target, "get", ids[0], "--json")
        assert got.returncode == 0, f"{got}\n{service.log()}"
        assert got.json()["name"] == "kept"
        # And counts, answered from the counters the rebuild filled: kept and updated are
        # alive, kept tagged t, updated u.
        for tags, expected in (((), "2"), (("--tag", "t"), "1"), (("--tag", "u"), "1")):
            counted = await run_flows(target, "count", *tags)
            assert counted.returncode == 0, str(counted)
            assert counted.stdout.strip() == expected, (tags, str(counted))
        await service.stop()
    log = service.log_path.read_text()
    assert REBUILDING in log, log
    assert "Traceback" not in log, log
    assert stored_version(target.database) == SCHEMA_VERSION
    assert read_model(target.database) == await rebuild_into(target, tmp_path / "reference")


async def test_a_model_of_the_current_version_is_used_as_it_is(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    target = new_target(nats_server.url, tmp_path)
    await written_by_a_service(target)
    before = read_model(target.database)
    async with ServiceProcess(target) as service:
        await service.start()
        await service.stop()
    assert REBUILDING not in service.log_path.read_text()
    assert read_model(target.database) == before
