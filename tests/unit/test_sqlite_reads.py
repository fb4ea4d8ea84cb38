"""Flow documents read in place from a SQLite model answer exactly as the general path does,
and a database that cannot be read at once says so instead of stalling the loop."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from events.contract.commands import CreateFlow, UpdateFlow
from events.contract.errors import FlowNotFound
from events.contract.subjects import Subjects
from events.memory_log import InMemoryLog
from events.writer import FlowWriter
from projections import answers
from projections.scratch import replay_into, scratch_model
from projections.sqlite_reads import SQLiteBusy, SQLiteDocuments

SUBJECTS = Subjects("t")


async def written(log: InMemoryLog) -> list[str]:
    writer = FlowWriter(log, SUBJECTS)
    labels = {"big": 2**70, "f": 1.5, "flag": True, "text": "é"}
    ids = []
    for name, tags in (("plain", []), ("tagged", ["b", "a", "b"]), ("ünïcode name", ["x"])):
        created = await writer.execute(CreateFlow(name=name, tags=tags, labels=labels))
        ids.append(created.body["id"])
    await writer.execute(UpdateFlow(id=ids[1], tags=["z"]))
    await writer.execute(UpdateFlow(id=ids[2]))
    return ids


async def test_in_place_reads_answer_byte_for_byte_as_the_general_path(tmp_path: Path) -> None:
    log = InMemoryLog()
    ids = await written(log)
    database = tmp_path / "model.db"
    async with scratch_model(database) as engine:
        await replay_into(engine, log, SUBJECTS)
        documents = SQLiteDocuments(database)
        try:
            async with engine.connect() as conn:
                for flow_id in ids:
                    general = await answers.read(conn, flow_id)
                    assert answers.read_now(documents, flow_id) == general
                    spelled = flow_id.replace("-", "").upper()  # any UUID spelling names it
                    assert answers.read_now(documents, spelled) == general
                for name in ("plain", "tagged", "ünïcode name"):
                    general = await answers.read_by_name(conn, name)
                    assert answers.read_by_name_now(documents, name) == general
            for missing in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
                with pytest.raises(FlowNotFound):
                    answers.read_now(documents, missing)
            with pytest.raises(FlowNotFound):
                answers.read_by_name_now(documents, "PLAIN")  # names are exact
        finally:
            documents.close()


def test_a_locked_database_is_busy_at_once_not_waited_for(tmp_path: Path) -> None:
    database = tmp_path / "locked.db"
    with contextlib.closing(sqlite3.connect(database)) as setup:
        setup.execute("CREATE TABLE flow (id TEXT PRIMARY KEY, name TEXT, document BLOB)")
        setup.commit()
    documents = SQLiteDocuments(database)
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # a rollback-journal database: readers locked out
        with pytest.raises(SQLiteBusy, match="locked"):
            documents.by_name("anything")
        holder.execute("ROLLBACK")
        assert documents.by_name("anything") is None
    finally:
        holder.close()
        documents.close()
