"""Flow documents read in place from a SQLite model answer exactly as the general path does,
and a database that cannot be read at once says so instead of stalling the loop."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from events.contract.commands import CreateFlow, UpdateFlow
from events.contract.errors import FlowNotFound
from events.contract.queries import (
    parse_count_request,
    parse_filter_request,
    parse_paginate_request,
)
from events.contract.subjects import Subjects
from events.memory_log import InMemoryLog
from events.writer import FlowWriter
from projections import answers, sqlite_reads, tag_plan
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
                    assert await answers.read_now(documents, flow_id) == general
                    spelled = flow_id.replace("-", "").upper()  # any UUID spelling names it
                    assert await answers.read_now(documents, spelled) == general
                for name in ("plain", "tagged", "ünïcode name"):
                    general = await answers.read_by_name(conn, name)
                    assert await answers.read_by_name_now(documents, name) == general
            for missing in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
                with pytest.raises(FlowNotFound):
                    await answers.read_now(documents, missing)
            with pytest.raises(FlowNotFound):
                await answers.read_by_name_now(documents, "PLAIN")  # names are exact
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


# --- filters, counts and pages on plain sqlite3 ------------------------------------------------

# Every kind of criterion a statement binds (lists with and without U+0000, patterns, times,
# enums, booleans), and shapes met twice with different values: a statement built for the first
# must answer the second with the second's values.
BODIES: list[dict[str, Any]] = [
    {},
    {"flows": {"tags": {"all_": ["blue"]}, "name": {"like_": "seed"}}, "limit": 5},
    {"flows": {"tags": {"all_": ["db"]}, "name": {"like_": "-01"}}, "limit": 5},
    {"flows": {"tags": {"all_": ["db", "blue", "db"]}}},
    {"flows": {"tags": {"all_": ["db", "green"]}}},
    {"flows": {"tags": {"all_": ["db"]}}},
    {"flows": {"tags": {"all_": ["blue"]}}},
    {"flows": {"tags": {"all_": ["nul\u0000tag"]}}},
    {"flows": {"tags": {"all_": ["nul\u0000tag", "db"]}}},
    {"flows": {"tags": {"is_null_": True}}},
    {"flows": {"tags": {"is_null_": False}, "name": {"like_": "2"}}},
    {"flows": {"name": {"any_": ["seed-03", "seed-11", "nope"]}}},
    {"flows": {"name": {"any_": ["seed-05"]}}},
    {"flows": {"name": {"any_": ["nul\u0000name", "seed-07"]}}},
    {"flows": {"operator": "or_", "name": {"like_": "-1"}, "tags": {"all_": ["green"]}}},
    {"flows": {"operator": "or_", "name": {"like_": "-2"}, "tags": {"all_": ["blue"]}}},
    {"flows": {"deployment": {"is_null_": True}}, "sort": "CREATED_DESC", "limit": 4},
    {"sort": "NAME_DESC", "limit": 7, "offset": 3},
    {"sort": "UPDATED_DESC", "limit": 7, "offset": 10},
    {"limit": 0},
    {"offset": 2**63},
    {"flow_runs": {"start_time": {"before_": "2030-01-01T00:00:00Z"}}},
    {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "FAILED"]}}}},
    {"flow_runs": {"tags": {"any_": ["db"]}}, "task_runs": {"name": {"like_": "t"}}},
    {"deployments": {"tags": {"all_": ["db"]}}, "work_pools": {"name": {"any_": ["p"]}}},
]


async def seeded_with_filters(log: InMemoryLog) -> dict[str, str]:
    writer = FlowWriter(log, SUBJECTS)
    ids = {}
    for i in range(30):
        tags = ["db", "blue"] if i % 2 else ["db"]
        tags = [] if i % 7 == 0 else [*tags, "nul\x00tag"] if i % 5 == 0 else tags
        name = "nul\x00name" if i == 29 else f"seed-{i:02d}"
        created = await writer.execute(CreateFlow(name=name, tags=tags))
        ids[name] = created.body["id"]
    await writer.execute(UpdateFlow(id=ids["seed-04"], tags=["green", "db"]))
    return ids


@pytest.mark.parametrize("where", ["in place", "on the reader thread", "from the rarest tag"])
async def test_filters_counts_and_pages_answer_byte_for_byte_as_the_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "on the reader thread":
        # No budget at all: every query is interrupted at once and runs on the thread.
        monkeypatch.setattr(sqlite_reads, "IN_PLACE_BUDGET_S", 0.0)
        monkeypatch.setattr(sqlite_reads, "_PROGRESS_STEPS", 1)
    if where == "from the rarest tag":
        # Walking made dear: every page whose filter requires tags starts from one of them.
        monkeypatch.setattr(tag_plan, "_WALK_US", 1e9)
    log = InMemoryLog()
    ids = await seeded_with_filters(log)
    bodies = [
        *BODIES,
        {"flows": {"id": {"any_": [ids["seed-01"], ids["seed-02"]]}}},
        {"flows": {"id": {"not_any_": [ids["seed-01"], ids["seed-02"]]}}},
    ]
    database = tmp_path / "model.db"
    async with scratch_model(database) as engine:
        await replay_into(engine, log, SUBJECTS)
        documents = SQLiteDocuments(database)
        try:
            async with engine.connect() as conn:
                for body in bodies:
                    filtered = parse_filter_request(body)
                    general = await answers.filter(conn, filtered)
                    assert await answers.filter_now(documents, filtered) == general, body
                    counted = parse_count_request(body)
                    general = await answers.count(conn, counted)
                    assert await answers.count_now(documents, counted) == general, body
                    paged = parse_paginate_request({**body, "page": 2} if body else body)
                    general = await answers.paginate(conn, paged)
                    assert await answers.paginate_now(documents, paged) == general, body
            # The answers were not all empty: the bodies do select flows.
            everything = await answers.count_now(documents, parse_count_request({}))
            assert everything == b"30"
            assert (documents.reader_used > 0) == (where == "on the reader thread")
            if where == "from the rarest tag":
                walked = [key for key in documents._compiled if key[0] == "page" and not key[-1]]
                driven = [key for key in documents._compiled if key[0] == "page" and key[-1]]
                assert driven and walked  # those whose filter requires tags, and the rest
        finally:
            documents.close()


async def test_a_shape_past_its_budget_moves_to_the_reader_thread_until_cheap_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = InMemoryLog()
    await seeded_with_filters(log)
    database = tmp_path / "model.db"
    async with scratch_model(database) as engine:
        await replay_into(engine, log, SUBJECTS)
    monkeypatch.setattr(sqlite_reads, "_PROGRESS_STEPS", 1)
    documents = SQLiteDocuments(database)
    request = parse_count_request({"flows": {"name": {"like_": "seed"}}})
    try:
        monkeypatch.setattr(sqlite_reads, "IN_PLACE_BUDGET_S", 0.0)
        assert await answers.count_now(documents, request) == b"29"
        assert documents.reader_used == 1  # interrupted in place, answered on the thread
        assert await answers.count_now(documents, request) == b"29"
        assert documents.reader_used == 2  # remembered as heavy: straight to the thread
        monkeypatch.setattr(sqlite_reads, "IN_PLACE_BUDGET_S", 10.0)
        assert await answers.count_now(documents, request) == b"29"
        assert documents.reader_used == 3  # cheap against the new budget: in place next time
        assert await answers.count_now(documents, request) == b"29"
        assert documents.reader_used == 3
    finally:
        documents.close()
