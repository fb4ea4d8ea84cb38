"""The flows queries against real read-model tables, on SQLite and (when configured) PostgreSQL.

Rows are inserted straight into the tables (no projector), then each request goes the whole read
path: `parse_*_request` → `filter_sql` → `queries`. Expected answers are Prefect 3.9.1's: the
`TestCountFlowsModels` matrix (reference §5.C), the recorded live-server answers (§6), the API
tests A14-A32 and the ordering of §4.4.

The PostgreSQL variant runs on the server FLOWS_TEST_POSTGRES_URL names (each dataset gets a
schema of its own, dropped afterwards); without it, it fails (tests/backends.py).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from events import jsoncodec
from events.contract.queries import (
    parse_bulk_delete_request,
    parse_count_request,
    parse_filter_request,
    parse_paginate_request,
)
from events.model import flow_document
from projections.filter_sql import flows_where
from projections.queries import (
    count_flows,
    filter_flows,
    paginate_flows,
    read_flow,
    read_flow_by_name,
    select_flows_for_bulk_delete,
)
from projections.scratch import scratch_model
from projections.tables import (
    deployment,
    flow,
    flow_run,
    flow_tag,
    metadata,
    task_run,
    work_pool,
    work_queue,
)
from tests import backends
from tests.reference_apply import recount

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module", params=backends.BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@asynccontextmanager
async def fresh_database(backend: str, directory: Path) -> AsyncIterator[AsyncEngine]:
    """Empty read-model tables: a new SQLite file, or a new PostgreSQL schema (tests/backends.py)."""
    if backend == backends.SQLITE:
        async with scratch_model(directory / "read-model.db") as engine:
            yield engine
        return
    server = backends.postgres_server_url()
    async with backends.fresh_postgres_schema(server) as schema:
        engine = create_async_engine(
            server, connect_args={"server_settings": {"search_path": schema}}
        )
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            yield engine
        finally:
            await engine.dispose()


def _row(table: Table, **values: Any) -> dict[str, Any]:
    # Every key present in every row, so each table is one executemany.
    row = dict.fromkeys(table.c.keys())
    row.update(values)
    return row


@dataclass
class Seed:
    """Rows for the read-model tables, written in foreign-key order."""

    ids: dict[str, str] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    clock: datetime = T0

    def _add(self, table: Table, key: str | None, **values: Any) -> str:
        row_id = values.setdefault("id", str(uuid.uuid4()))
        self.rows.setdefault(table.name, []).append(_row(table, **values))
        if key is not None:
            self.ids[key] = row_id
        return str(row_id)

    def flow(
        self,
        name: str,
        tags: Sequence[str] = (),
        *,
        labels: dict[str, Any] | None = None,
        created: datetime | None = None,
        updated: datetime | None = None,
        flow_id: str | None = None,
    ) -> str:
        self.clock += timedelta(seconds=1)
        created = created or self.clock
        values: dict[str, Any] = {
            "name": name,
            "tags": list(tags),
            "labels": labels,
            "created": created,
            "updated": updated or created,
            "version": len(self.rows.get("flow", ())) + 1,
        }
        values["id"] = flow_id or str(uuid.uuid4())
        values["document"] = jsoncodec.dumps(
            flow_document(values["id"], created, values["updated"], name, list(tags), labels)
        )
        new_id = self._add(flow, name, **values)
        for tag in sorted(set(tags)):
            self.rows.setdefault("flow_tag", []).append({"flow_id": new_id, "tag": tag})
        return new_id

    def work_pool(self, name: str, type_: str) -> str:
        return self._add(work_pool, name, name=name, type=type_)

    def work_queue(self, name: str, pool: str) -> str:
        return self._add(work_queue, None, name=name, work_pool_id=self.ids[pool])

    def deployment(
        self,
        name: str,
        of: str,
        *,
        paused: bool = False,
        tags: Sequence[str] = (),
        queue_id: str | None = None,
        queue_name: str | None = None,
    ) -> str:
        return self._add(
            deployment,
            name,
            flow_id=self.ids[of],
            name=name,
            paused=paused,
            tags=list(tags),
            work_queue_id=queue_id,
            work_queue_name=queue_name,
        )

    def flow_run(
        self,
        name: str,
        of: str,
        *,
        tags: Sequence[str] = (),
        state: str | None = None,
        dep: str | None = None,
        **columns: Any,
    ) -> str:
        return self._add(
            flow_run,
            name,
            flow_id=self.ids[of],
            name=name,
            tags=list(tags),
            state_type=state,
            state_name=state.title() if state else None,
            deployment_id=self.ids[dep] if dep else None,
            **columns,
        )

    def task_run(
        self,
        name: str,
        run: str,
        *,
        tags: Sequence[str] = (),
        state: str | None = None,
        **columns: Any,
    ) -> str:
        return self._add(
            task_run,
            name,
            flow_run_id=self.ids[run],
            name=name,
            tags=list(tags),
            state_type=state,
            state_name=state.title() if state else None,
            **columns,
        )

    async def write(self, engine: AsyncEngine) -> None:
        order = (work_pool, work_queue, flow, flow_tag, deployment, flow_run, task_run)
        async with engine.begin() as conn:
            for table in order:
                if rows := self.rows.get(table.name):
                    await conn.execute(insert(table), rows)
            await recount(conn)  # what the projector keeps with the rows


@dataclass
class Dataset:
    engine: AsyncEngine
    ids: dict[str, str]

    async def names(self, body: Any) -> list[str]:
        async with self.engine.connect() as conn:
            flows = await filter_flows(conn, parse_filter_request(body))
        return [f["name"] for f in flows]

    async def count(self, body: Any) -> int:
        async with self.engine.connect() as conn:
            return await count_flows(conn, parse_count_request(body))

    async def paginate(self, body: Any) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            return await paginate_flows(conn, parse_paginate_request(body))

    async def to_delete(self, body: Any) -> list[str]:
        request = parse_bulk_delete_request(body)
        async with self.engine.connect() as conn:
            flows = await select_flows_for_bulk_delete(conn, request.flows, request.limit)
        return [f["name"] for f in flows]


@asynccontextmanager
async def seeded(backend: str, directory: Path, seed: Seed) -> AsyncIterator[Dataset]:
    async with fresh_database(backend, directory) as engine:
        await seed.write(engine)
        yield Dataset(engine, seed.ids)


# --- §5.C: Prefect's TestCountFlowsModels fixture ------------------------------------------------


def matrix_seed() -> Seed:
    s = Seed()
    s.flow("f-1", ["db", "blue"])
    s.flow("f-2", ["db"])
    s.flow("f-3")
    s.flow("f-4")
    s.work_pool("Test Pool", "test")
    default_queue = s.work_queue("default", "Test Pool")
    s.deployment("d-1-1", "f-1", tags=["prod", "eu"])
    s.deployment("d-1-2", "f-1", paused=True, queue_name="test-queue-for-filters")
    s.deployment("d-3-1", "f-3", tags=["test"], queue_id=default_queue, queue_name="default")

    s.flow_run(
        "test-happy-duck",
        "f-1",
        tags=["db", "blue"],
        state="COMPLETED",
        dep="d-1-1",
        start_time=datetime(2020, 1, 1, 10, tzinfo=UTC),
        end_time=datetime(2020, 1, 1, 11, tzinfo=UTC),
        idempotency_key="k1",
    )
    s.flow_run("sad-duck", "f-1", tags=["db", "blue"], state="COMPLETED")
    s.flow_run(
        "test-happy-mallard",
        "f-1",
        tags=["db", "red"],
        state="FAILED",
        dep="d-1-1",
        created_by={"id": "5f0ab4d6-4ba4-4a43-8a3f-34ff7b6aa0a1", "type": "DEPLOYMENT"},
    )
    s.flow_run("anon-1", "f-1", tags=["red"], state="RUNNING")
    s.flow_run(
        "anon-2", "f-1", state="RUNNING", dep="d-1-2", work_queue_name="test-queue-for-filters"
    )
    s.flow_run(
        "another-test-happy-duck",
        "f-2",
        tags=["db", "blue"],
        state="COMPLETED",
        start_time=datetime(2020, 2, 1, tzinfo=UTC),
    )
    s.flow_run("another-sad-duck", "f-2", tags=["red"], state="RUNNING", flow_version="2.0")
    s.flow_run("anon-3", "f-2", tags=["db", "red"], state="FAILED")
    s.flow_run("anon-4", "f-3", state="COMPLETED", dep="d-3-1")
    s.flow_run(
        "anon-5",
        "f-3",
        tags=["db", "red"],
        state="SCHEDULED",
        expected_start_time=datetime(2020, 6, 1, tzinfo=UTC),
    )
    s.task_run(
        "task-run-1",
        "test-happy-duck",
        state="RUNNING",
        start_time=datetime(2020, 1, 1, 10, 5, tzinfo=UTC),
    )
    s.task_run("task-run-2", "test-happy-duck", state="COMPLETED")
    s.task_run("task-run-2a", "test-happy-duck", state="COMPLETED")
    for name in ("sad-task-a", "sad-task-b", "sad-task-c"):
        s.task_run(name, "another-sad-duck", state="COMPLETED")
    s.task_run("failing-task", "anon-4", state="FAILED")
    # f-4: a parent run whose task b started a subflow run (of f-4), itself with a task run.
    s.flow_run("parent-run", "f-4", state="COMPLETED")
    s.task_run("task-a", "parent-run", state="COMPLETED")
    task_b = s.task_run("task-b", "parent-run", state="COMPLETED")
    s.flow_run("subflow-run", "f-4", state="COMPLETED", parent_task_run_id=task_b)
    s.task_run("subflow-task", "subflow-run", state="COMPLETED")
    return s


@pytest.fixture(scope="module")
async def matrix(backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dataset]:
    async with seeded(backend, tmp_path_factory.mktemp("matrix"), matrix_seed()) as data:
        yield data


MATRIX_CASES: list[tuple[str, dict[str, Any], int]] = [
    ("47", {}, 4),
    ("48", {"flows": {"name": {"any_": ["f-1", "f-2"]}}}, 2),
    ("49", {"flows": {"name": {"any_": ["f-1", "f-100"]}}}, 1),
    ("50", {"flows": {"name": {"any_": ["f-1"]}}}, 1),
    ("51", {"flows": {"name": {"like_": "f"}}}, 4),
    ("52", {"flows": {"name": {"like_": "1"}}}, 1),
    ("53", {"flows": {"tags": {"all_": ["db"]}}}, 2),
    ("54", {"flows": {"tags": {"all_": ["db", "blue"]}}}, 1),
    ("55", {"flows": {"tags": {"all_": ["db", "red"]}}}, 0),
    ("56", {"flow_runs": {"tags": {"all_": ["db", "red"]}}}, 3),
    ("57", {"flow_runs": {"tags": {"all_": ["db", "blue"]}}}, 2),
    ("58", {"flow_runs": {"tags": {"is_null_": True}}}, 3),
    ("59", {"flow_runs": {"name": {"like_": "test-happy"}}}, 2),
    ("60", {"flow_runs": {"name": {"like_": "test-happy-mallard"}}}, 1),
    ("61", {"task_runs": {"name": {"like_": "2a"}}}, 1),
    ("62", {"deployments": {"id": {"any_": ["<d-1-1>"]}}}, 1),
    ("63", {"deployments": {"name": {"like_": "d-1"}}}, 1),
    ("64", {"task_runs": {"state": {"type": {"any_": ["FAILED"]}}}}, 1),
    (
        "65",
        {
            "task_runs": {"state": {"type": {"any_": ["FAILED"]}}},
            "flow_runs": {"tags": {"all_": ["xyz"]}},
        },
        0,
    ),
    ("66", {"flow_runs": {"deployment_id": {"any_": ["<d-1-1>", "<d-1-2>"]}}}, 1),
    ("67", {"flow_runs": {"deployment_id": {"any_": ["<d-1-1>", "<d-3-1>"]}}}, 2),
    ("68", {"task_runs": {"subflow_runs": {"exists_": True}}}, 1),
    ("69", {"flow_runs": {"parent_task_run_id": {"is_null_": False}}}, 1),
    ("70", {"flows": {}}, 4),
    ("71", {"flows": {}, "flow_runs": {}}, 4),
]


def resolve(body: Any, ids: dict[str, str]) -> Any:
    """Replace "<key>" placeholders with the seeded id of that key."""
    if isinstance(body, dict):
        return {k: resolve(v, ids) for k, v in body.items()}
    if isinstance(body, list):
        return [resolve(v, ids) for v in body]
    if isinstance(body, str) and body.startswith("<") and body.endswith(">"):
        return ids[body[1:-1]]
    return body


class TestPrefectFilterMatrix:
    """Reference §5.C: each case via filter (distinct flows) and count, like Prefect's test."""

    @pytest.mark.parametrize(
        ("body", "expected"), [pytest.param(b, n, id=case) for case, b, n in MATRIX_CASES]
    )
    async def test_case(self, matrix: Dataset, body: dict[str, Any], expected: int) -> None:
        body = resolve(body, matrix.ids)
        names = await matrix.names(body)
        assert len(names) == len(set(names)) == expected
        assert await matrix.count(body) == expected


# Further semantics on the same fixture: (body, number of flows).
MATRIX_SEMANTICS: list[tuple[str, dict[str, Any], int]] = [
    # FlowRunFilterState skips empty parts instead of making `or_` match everything.
    (
        "state-or-skips-empty-part",
        {"flow_runs": {"state": {"operator": "or_", "type": {}, "name": {"any_": ["Failed"]}}}},
        2,
    ),
    (
        "state-type-any-and-not-any-both-kept",
        {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"], "not_any_": ["COMPLETED"]}}}},
        0,
    ),
    (
        "state-not-any-empty-is-no-condition",
        {"flow_runs": {"state": {"type": {"not_any_": []}}}},
        4,
    ),
    ("state-not-any", {"flow_runs": {"state": {"type": {"not_any_": ["COMPLETED"]}}}}, 3),
    ("state-name-not-any", {"flow_runs": {"state": {"name": {"not_any_": ["Completed"]}}}}, 3),
    # ... whereas an empty sub-filter of FlowRunFilter under `or_` is TRUE.
    (
        "or-with-empty-sub-filter-is-true",
        {"flow_runs": {"operator": "or_", "name": {}, "tags": {"all_": ["xyz"]}}},
        4,
    ),
    (
        "and-with-empty-sub-filter-is-harmless",
        {"flow_runs": {"name": {}, "tags": {"all_": ["xyz"]}}},
        0,
    ),
    ("run-tags-any", {"flow_runs": {"tags": {"any_": ["blue", "nope"]}}}, 2),
    ("run-tags-any-empty-matches-nothing", {"flow_runs": {"tags": {"any_": []}}}, 0),
    ("run-tags-all-empty-is-no-condition", {"flow_runs": {"tags": {"all_": []}}}, 4),
    (
        "run-tags-own-operator",
        {"flow_runs": {"tags": {"operator": "or_", "all_": ["xyz"], "is_null_": True}}},
        3,
    ),
    ("run-tags-not-empty", {"flow_runs": {"tags": {"is_null_": False}}}, 3),
    ("run-id-any", {"flow_runs": {"id": {"any_": ["<sad-duck>"]}}}, 1),
    ("run-id-any-empty", {"flow_runs": {"id": {"any_": []}}}, 0),
    ("run-id-not-any", {"flow_runs": {"id": {"not_any_": ["<anon-4>", "<anon-5>"]}}}, 3),
    ("run-name-any", {"flow_runs": {"name": {"any_": ["sad-duck", "x"]}}}, 1),
    ("run-deployment-is-null", {"flow_runs": {"deployment_id": {"is_null_": False}}}, 2),
    (
        "run-work-queue-name",
        {"flow_runs": {"work_queue_name": {"any_": ["test-queue-for-filters"]}}},
        1,
    ),
    ("run-work-queue-name-set", {"flow_runs": {"work_queue_name": {"is_null_": False}}}, 1),
    ("run-flow-version", {"flow_runs": {"flow_version": {"any_": ["2.0"]}}}, 1),
    ("run-idempotency-key", {"flow_runs": {"idempotency_key": {"any_": ["k1"]}}}, 1),
    # SQL NOT IN never matches a NULL key, and only one run has a key at all.
    ("run-idempotency-not-any", {"flow_runs": {"idempotency_key": {"not_any_": ["k1"]}}}, 0),
    ("run-created-by-type", {"flow_runs": {"created_by": {"type_": ["DEPLOYMENT"]}}}, 1),
    (
        "run-created-by-id",
        {"flow_runs": {"created_by": {"id_": ["5f0ab4d6-4ba4-4a43-8a3f-34ff7b6aa0a1"]}}},
        1,
    ),
    ("run-created-by-set", {"flow_runs": {"created_by": {"is_null_": False}}}, 1),
    ("run-created-by-unset", {"flow_runs": {"created_by": {"is_null_": True}}}, 4),
    # start_time bounds use COALESCE(start_time, expected_start_time); is_null_ the start only.
    ("start-before-inclusive", {"flow_runs": {"start_time": {"before_": "2020-01-01T10:00Z"}}}, 1),
    ("start-after-coalesced", {"flow_runs": {"start_time": {"after_": "2020-01-15T00:00Z"}}}, 2),
    ("start-set", {"flow_runs": {"start_time": {"is_null_": False}}}, 2),
    ("end-set", {"flow_runs": {"end_time": {"is_null_": False}}}, 1),
    (
        "end-before-other-zone-inclusive",
        {"flow_runs": {"end_time": {"before_": "2020-01-01T12:00:00+01:00"}}},
        1,
    ),
    (
        "end-before-other-zone-exclusive",
        {"flow_runs": {"end_time": {"before_": "2020-01-01T11:59:59+01:00"}}},
        0,
    ),
    ("end-after-naive-is-utc", {"flow_runs": {"end_time": {"after_": "2020-01-01T11:00:00"}}}, 1),
    ("expected-after", {"flow_runs": {"expected_start_time": {"after_": "2020-05-01T00:00Z"}}}, 1),
    (
        "next-scheduled-unset",
        {"flow_runs": {"next_scheduled_start_time": {"after_": "2000-01-01"}}},
        0,
    ),
    ("subflows-of-parent", {"flow_runs": {"parent_flow_run_id": {"any_": ["<parent-run>"]}}}, 1),
    (
        "subflows-of-other",
        {"flow_runs": {"parent_flow_run_id": {"any_": ["<test-happy-duck>"]}}},
        0,
    ),
    ("parent-task-any", {"flow_runs": {"parent_task_run_id": {"any_": ["<task-b>"]}}}, 1),
    ("task-id", {"task_runs": {"id": {"any_": ["<subflow-task>"]}}}, 1),
    ("task-name-any", {"task_runs": {"name": {"any_": ["task-a", "sad-task-a"]}}}, 2),
    ("task-start-after", {"task_runs": {"start_time": {"after_": "2020-01-01T00:00Z"}}}, 1),
    ("task-start-unset", {"task_runs": {"start_time": {"is_null_": True}}}, 4),
    ("task-end-set", {"task_runs": {"end_time": {"is_null_": False}}}, 0),
    ("task-not-subflow-parent", {"task_runs": {"subflow_runs": {"exists_": False}}}, 4),
    ("task-flow-run-id-default", {"task_runs": {"flow_run_id": {}}}, 4),
    ("task-flow-run-id-is-null", {"task_runs": {"flow_run_id": {"is_null_": True}}}, 0),
    ("task-flow-run-id-any", {"task_runs": {"flow_run_id": {"any_": ["<another-sad-duck>"]}}}, 1),
    (
        "task-state-or-skips-empty-part",
        {"task_runs": {"state": {"operator": "or_", "type": {}, "name": {"any_": ["Failed"]}}}},
        1,
    ),
    ("task-tags-empty", {"task_runs": {"tags": {"is_null_": True}}}, 4),
    ("task-tags-all", {"task_runs": {"tags": {"all_": ["x"]}}}, 0),
    # Deployments: present-but-empty needs one deployment; work pools need a queue (inner joins).
    ("deployments-empty", {"deployments": {}}, 2),
    ("work-pools-empty", {"work_pools": {}}, 1),
    ("work-pool-name", {"work_pools": {"name": {"any_": ["Test Pool"]}}}, 1),
    ("work-pool-type", {"work_pools": {"type": {"any_": ["process"]}}}, 0),
    ("work-pool-id", {"work_pools": {"id": {"any_": ["<Test Pool>"]}}}, 1),
    (
        "same-deployment-for-both",
        {"deployments": {"name": {"any_": ["d-1-1"]}}, "work_pools": {}},
        0,
    ),
    ("paused", {"deployments": {"paused": {"eq_": True}}}, 1),
    ("not-paused", {"deployments": {"paused": {"eq_": False}}}, 2),
    ("deployment-queue-name", {"deployments": {"work_queue_name": {"any_": ["default"]}}}, 1),
    ("deployment-id-not-any", {"deployments": {"id": {"not_any_": ["<d-3-1>"]}}}, 1),
    ("deployment-tags-any", {"deployments": {"tags": {"any_": ["eu", "test"]}}}, 2),
    ("deployment-tags-all", {"deployments": {"tags": {"all_": ["prod", "eu", "eu"]}}}, 1),
    ("deployment-tags-none", {"deployments": {"tags": {"is_null_": True}}}, 1),
    (
        "flow-or-deployment-name-by-flow",
        {"deployments": {"flow_or_deployment_name": {"like_": "F-3"}}},
        1,
    ),
    (
        "flow-or-deployment-name-by-deployment",
        {"deployments": {"flow_or_deployment_name": {"like_": "d-1-2"}}},
        1,
    ),
    (
        "flow-or-deployment-name-no-match",
        {"deployments": {"flow_or_deployment_name": {"like_": "f-2"}}},
        0,
    ),
    # The deprecated concurrency_limit adds nothing, not even TRUE under `or_`.
    ("concurrency-limit-ignored", {"deployments": {"concurrency_limit": {"ge_": 1000}}}, 2),
    (
        "concurrency-limit-not-true-under-or",
        {
            "deployments": {
                "operator": "or_",
                "concurrency_limit": {},
                "name": {"any_": ["d-3-1"]},
            }
        },
        1,
    ),
    (
        "deployment-or-empty-part-is-true",
        {"deployments": {"operator": "or_", "paused": {}, "name": {"any_": ["x"]}}},
        2,
    ),
    # The five groups are ANDed.
    (
        "groups-are-anded",
        {"flows": {"name": {"any_": ["f-1", "f-3"]}}, "deployments": {"paused": {"eq_": False}}},
        2,
    ),
    (
        "groups-are-anded-2",
        {"flows": {"name": {"any_": ["f-1"]}}, "work_pools": {}},
        0,
    ),
]


class TestCrossEntitySemantics:
    @pytest.mark.parametrize(
        ("body", "expected"), [pytest.param(b, n, id=case) for case, b, n in MATRIX_SEMANTICS]
    )
    async def test_case(self, matrix: Dataset, body: dict[str, Any], expected: int) -> None:
        body = resolve(body, matrix.ids)
        names = await matrix.names(body)
        assert len(names) == len(set(names)) == expected
        assert await matrix.count(body) == expected


# --- §6: the dataset of the recorded live-server answers -----------------------------------------

OTHER_NAMES = [
    "   ",
    "'",
    "L" * 300,
    "MY_FLOW_underscore",
    "Minimal",
    "my flow",
    "my:flow",
    "my\\flow",
    "my|flow",
    "my👍flow",
    "new\nline",
    "tab\there",
    "labels-null",
    "good-client",
    "no-slash",
]


def recorded_seed() -> Seed:
    s = Seed()
    s.flow("my-flow", ["TB12"], labels={"env": "dev", "n": 1})
    s.flow("dup-tags", ["dup", "dup"], labels={})
    names = list(OTHER_NAMES)
    random.Random(7).shuffle(names)  # insertion order must not leak into name order
    for name in names:
        s.flow(name, labels=None if name == "labels-null" else {})
    s.flow("alpha", ["db", "blue"])
    s.flow("beta", ["db"])
    s.flow("gamma")
    s.flow("Delta-Marvin", ["red"])
    s.flow("a_c")
    s.flow("abc")
    s.work_pool("pool-1", "process")
    s.work_pool("pool-2", "kubernetes")
    q1 = s.work_queue("default", "pool-1")
    q2 = s.work_queue("default", "pool-2")
    s.deployment("dep-alpha", "alpha", tags=["prod"], queue_id=q1, queue_name="default")
    s.deployment("dep-beta", "beta", paused=True, queue_id=q2, queue_name="default")
    s.flow_run("run-alpha", "alpha", tags=["nightly"], state="COMPLETED")
    s.flow_run("run-gamma", "gamma", state="FAILED")
    s.task_run("task-gamma", "run-gamma", state="FAILED")
    return s


@pytest.fixture(scope="module")
async def recorded(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Dataset]:
    async with seeded(backend, tmp_path_factory.mktemp("recorded"), recorded_seed()) as data:
        yield data


RECORDED_FILTERS: list[tuple[dict[str, Any], list[str]]] = [
    ({"limit": 0}, []),
    ({"flows": {"name": {"any_": ["alpha", "beta", "nope"]}}}, ["alpha", "beta"]),
    ({"flows": {"name": {"any_": []}}}, []),
    ({"flows": {"name": {"like_": "MARVIN"}}}, ["Delta-Marvin"]),
    ({"flows": {"name": {"like_": "a_c"}}}, ["a_c", "abc"]),
    ({"flows": {"tags": {"all_": ["db"]}}}, ["alpha", "beta"]),
    ({"flows": {"tags": {"all_": ["db", "blue"]}}}, ["alpha"]),
    (
        {"flows": {"tags": {"is_null_": False}}},
        ["Delta-Marvin", "alpha", "beta", "dup-tags", "my-flow"],
    ),
    (
        {"flows": {"operator": "or_", "name": {"any_": ["alpha"]}, "tags": {"all_": ["red"]}}},
        ["Delta-Marvin", "alpha"],
    ),
    ({"flows": {"id": {"not_any_": ["<alpha>"]}, "name": {"any_": ["alpha", "beta"]}}}, ["beta"]),
    ({"flows": {"deployment": {"is_null_": False}}}, ["alpha", "beta"]),
    ({"flow_runs": {}}, ["alpha", "gamma"]),
    ({"flow_runs": {"state": {"type": {"any_": ["FAILED"]}}}}, ["gamma"]),
    ({"task_runs": {}}, ["gamma"]),
    (
        {"flow_runs": {"tags": {"all_": ["nightly"]}}, "task_runs": {"name": {"like_": "gamma"}}},
        [],
    ),
    ({"deployments": {"paused": {"eq_": True}}}, ["beta"]),
    ({"deployments": {"tags": {"any_": ["prod"]}}}, ["alpha"]),
    ({"work_pools": {"type": {"any_": ["kubernetes"]}}}, ["beta"]),
    (
        {
            "deployments": {"name": {"any_": ["dep-alpha"]}},
            "work_pools": {"name": {"any_": ["pool-2"]}},
        },
        [],
    ),
    # Further FlowFilter semantics on the same rows (§4.2, §4.3).
    ({"flows": {"name": {"like_": "%"}}, "limit": 3}, ["   ", "'", "Delta-Marvin"]),
    ({"flows": {"name": {"like_": "ALPH_"}}}, ["alpha"]),
    ({"flows": {"name": {"any_": ["ALPHA", "Alpha"]}}}, []),
    (
        {"flows": {"name": {"any_": ["tab\there", "my👍flow", "new\nline", "'", "my\\flow"]}}},
        ["'", "my\\flow", "my👍flow", "new\nline", "tab\there"],
    ),
    ({"flows": {"tags": {"all_": ["DB"]}}}, []),
    ({"flows": {"tags": {"all_": ["db", "db"]}}}, ["alpha", "beta"]),
    ({"flows": {"tags": {"all_": ["dup"]}}}, ["dup-tags"]),
    (
        {"flows": {"tags": {"operator": "or_", "all_": ["red"], "is_null_": False}}},
        ["Delta-Marvin", "alpha", "beta", "dup-tags", "my-flow"],
    ),
    ({"flows": {"tags": {"all_": ["db"], "is_null_": True}}}, []),
    ({"flows": {"id": {"any_": ["<beta>", "<alpha>"], "not_any_": []}}}, ["alpha", "beta"]),
    ({"flows": {"id": {"any_": []}}}, []),
    ({"flows": {"operator": "or_", "id": {"any_": []}, "name": {"any_": ["gamma"]}}}, ["gamma"]),
    (
        {"flows": {"deployment": {"operator": "or_", "is_null_": True}, "tags": {"all_": ["db"]}}},
        [],
    ),
]


class TestRecordedAnswers:
    """Reference §6: the answers of a live Prefect 3.9.1 server on the same rows."""

    @pytest.mark.parametrize(("body", "expected"), RECORDED_FILTERS)
    async def test_filter(
        self, recorded: Dataset, body: dict[str, Any], expected: list[str]
    ) -> None:
        body = resolve(body, recorded.ids)
        assert await recorded.names(body) == expected
        if "limit" not in body:
            assert await recorded.count(body) == len(expected)

    async def test_count_without_body(self, recorded: Dataset) -> None:
        assert await recorded.count(None) == 23

    async def test_count_present_but_empty_deployments(self, recorded: Dataset) -> None:
        assert await recorded.count({"deployments": {}}) == 2

    @pytest.mark.parametrize(
        "flows",
        [
            {"operator": "or_", "name": {}, "tags": {"all_": ["red"]}},
            {"operator": "or_", "name": {"like_": ""}, "tags": {"all_": ["red"]}},
            {"operator": "or_", "tags": {"all_": []}, "id": {"any_": []}},
            {"operator": "or_", "deployment": {}, "name": {"any_": []}},
        ],
    )
    async def test_or_with_a_no_op_sub_filter_matches_every_flow(
        self, recorded: Dataset, flows: dict[str, Any]
    ) -> None:
        assert await recorded.count({"flows": flows}) == 23

    @pytest.mark.parametrize(
        "flows",
        [
            {},
            {"name": {}},
            {"name": {"like_": ""}, "tags": {"all_": []}, "id": {"not_any_": []}},
            {"name": {"like_": None, "any_": None}},
        ],
    )
    async def test_no_op_filters_match_every_flow(
        self, recorded: Dataset, flows: dict[str, Any]
    ) -> None:
        assert await recorded.count({"flows": flows}) == 23

    async def test_deployment_is_null(self, recorded: Dataset) -> None:
        names = await recorded.names({"flows": {"deployment": {"is_null_": True}}})
        assert len(names) == 21 and "alpha" not in names and "beta" not in names

    async def test_tags_is_null(self, recorded: Dataset) -> None:
        assert len(await recorded.names({"flows": {"tags": {"is_null_": True}}})) == 18

    async def test_paginate_limit_zero(self, recorded: Dataset) -> None:
        assert await recorded.paginate({"limit": 0}) == {
            "results": [],
            "count": 23,
            "limit": 0,
            "pages": 0,
            "page": 1,
        }

    async def test_bulk_delete_selection(self, recorded: Dataset) -> None:
        body = {"flows": {"id": {"any_": ["<beta>", str(uuid.uuid4())]}}}
        assert await recorded.to_delete(resolve(body, recorded.ids)) == ["beta"]
        assert await recorded.to_delete({"flows": {"id": {"any_": [str(uuid.uuid4())]}}}) == []
        every = await recorded.to_delete({})
        assert every == sorted(every) and len(every) == 23
        assert await recorded.to_delete({"limit": 2}) == every[:2]
        tagged = await recorded.to_delete({"flows": {"tags": {"all_": ["db"]}}, "limit": 1})
        assert tagged == ["alpha"]


class TestNameOrdering:
    """Reference §4.4: names sort in code-point order on both backends."""

    async def test_name_asc_is_code_point_order(self, recorded: Dataset) -> None:
        assert await recorded.names({}) == [
            "   ",
            "'",
            "Delta-Marvin",
            "L" * 300,
            "MY_FLOW_underscore",
            "Minimal",
            "a_c",
            "abc",
            "alpha",
            "beta",
            "dup-tags",
            "gamma",
            "good-client",
            "labels-null",
            "my flow",
            "my-flow",
            "my:flow",
            "my\\flow",
            "my|flow",
            "my👍flow",
            "new\nline",
            "no-slash",
            "tab\there",
        ]

    async def test_name_desc_is_the_reverse(self, recorded: Dataset) -> None:
        assert await recorded.names({"sort": "NAME_DESC"}) == list(
            reversed(await recorded.names({}))
        )

    async def test_paging_walks_every_flow_once(self, recorded: Dataset) -> None:
        pages = [await recorded.names({"limit": 5, "offset": o}) for o in range(0, 25, 5)]
        walked = [name for page in pages for name in page]
        assert walked == await recorded.names({})
        assert await recorded.names({"offset": 23}) == []
        assert await recorded.names({"offset": 10**30}) == []


class TestReadById:
    async def test_read_flow(self, recorded: Dataset) -> None:
        flow_id = recorded.ids["my-flow"]
        async with recorded.engine.connect() as conn:
            found = await read_flow(conn, flow_id.replace("-", "").upper())
            missing = await read_flow(conn, str(uuid.uuid4()))
            garbage = await read_flow(conn, "not-a-uuid")
        assert found is not None
        assert list(found) == ["id", "created", "updated", "name", "tags", "labels", "version"]
        assert found["id"] == flow_id
        assert found["name"] == "my-flow"
        assert found["tags"] == ["TB12"]
        assert found["labels"] == {"env": "dev", "n": 1}
        assert isinstance(found["version"], int)
        assert found["created"].tzinfo is not None
        assert found["created"].utcoffset() == timedelta(0)
        assert missing is None and garbage is None

    async def test_read_flow_by_name_is_exact(self, recorded: Dataset) -> None:
        async with recorded.engine.connect() as conn:
            exact = await read_flow_by_name(conn, "my flow")
            other_case = await read_flow_by_name(conn, "MY-FLOW")
            untrimmed = await read_flow_by_name(conn, "   ")
            labels_null = await read_flow_by_name(conn, "labels-null")
        assert exact is not None and exact["name"] == "my flow"
        assert other_case is None
        assert untrimmed is not None and untrimmed["name"] == "   "
        assert labels_null is not None and labels_null["labels"] is None

    async def test_duplicate_tags_are_returned_as_stored(self, recorded: Dataset) -> None:
        async with recorded.engine.connect() as conn:
            dup = await read_flow_by_name(conn, "dup-tags")
        assert dup is not None and dup["tags"] == ["dup", "dup"]


# --- A14-A32: Prefect's API tests for filter and paginate -----------------------------------------


def api_seed() -> Seed:
    s = Seed()
    s.flow("my-flow-1", created=T0, updated=T0 + timedelta(hours=2))
    s.flow("my-flow-2", created=T0 + timedelta(hours=1))
    s.flow_run("run-1", "my-flow-1", state="COMPLETED")
    s.task_run("task-1", "run-1", state="COMPLETED")
    s.work_pool("pool", "process")
    queue = s.work_queue("default", "pool")
    s.deployment("deployment-1", "my-flow-1", queue_id=queue, queue_name="default")
    return s


@pytest.fixture(scope="module")
async def api(backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dataset]:
    async with seeded(backend, tmp_path_factory.mktemp("api"), api_seed()) as data:
        yield data


@pytest.fixture(scope="module")
async def empty(backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dataset]:
    async with seeded(backend, tmp_path_factory.mktemp("empty"), Seed()) as data:
        yield data


FLOW_1_ONLY = [
    {"flows": {"name": {"any_": ["my-flow-1"]}}},
    {"flow_runs": {"id": {"any_": ["<run-1>"]}}},
    {"task_runs": {"id": {"any_": ["<task-1>"]}}},
    {"work_pools": {"id": {"any_": ["<pool>"]}}},
    {"flows": {"deployment": {"is_null_": False}}},
]


class TestApiFilter:
    async def test_no_body_reads_all(self, api: Dataset) -> None:  # A14
        assert await api.names(None) == ["my-flow-1", "my-flow-2"]

    async def test_limit(self, api: Dataset) -> None:  # A15
        assert await api.names({"limit": 1}) == ["my-flow-1"]

    @pytest.mark.parametrize("body", FLOW_1_ONLY)
    async def test_filters_select_flow_1(self, api: Dataset, body: dict[str, Any]) -> None:
        assert await api.names(resolve(body, api.ids)) == ["my-flow-1"]  # A16-A20

    async def test_flows_without_deployment(self, api: Dataset) -> None:  # A20
        assert await api.names({"flows": {"deployment": {"is_null_": True}}}) == ["my-flow-2"]

    async def test_offset(self, api: Dataset) -> None:  # A21
        assert await api.names({"offset": 1}) == ["my-flow-2"]

    @pytest.mark.parametrize(
        ("sort", "expected"),
        [
            ("NAME_ASC", ["my-flow-1", "my-flow-2"]),
            ("NAME_DESC", ["my-flow-2", "my-flow-1"]),
            ("CREATED_DESC", ["my-flow-2", "my-flow-1"]),
            ("UPDATED_DESC", ["my-flow-1", "my-flow-2"]),
        ],
    )
    async def test_sort(self, api: Dataset, sort: str, expected: list[str]) -> None:  # A22
        assert await api.names({"sort": sort}) == expected

    async def test_empty_database(self, empty: Dataset) -> None:  # A23, A31
        assert await empty.names({}) == []
        assert await empty.count({}) == 0
        assert await empty.paginate({}) == {
            "results": [],
            "count": 0,
            "limit": 200,
            "pages": 0,
            "page": 1,
        }


class TestApiPaginate:
    async def test_no_body(self, api: Dataset) -> None:  # A26
        page = await api.paginate(None)
        assert [f["name"] for f in page["results"]] == ["my-flow-1", "my-flow-2"]
        assert (page["count"], page["limit"], page["pages"], page["page"]) == (2, 200, 1, 1)

    async def test_limit(self, api: Dataset) -> None:  # A27
        page = await api.paginate({"limit": 1})
        assert [f["name"] for f in page["results"]] == ["my-flow-1"]
        assert (page["count"], page["pages"], page["page"]) == (2, 2, 1)

    @pytest.mark.parametrize("body", FLOW_1_ONLY)
    async def test_filters(self, api: Dataset, body: dict[str, Any]) -> None:  # A28
        page = await api.paginate(resolve(body, api.ids))
        assert [f["name"] for f in page["results"]] == ["my-flow-1"]
        assert page["count"] == 1

    async def test_second_page(self, api: Dataset) -> None:  # A29
        page = await api.paginate({"page": 2, "limit": 1})
        assert [f["name"] for f in page["results"]] == ["my-flow-2"]
        assert (page["page"], page["pages"]) == (2, 2)
        beyond = await api.paginate({"page": 10**20, "limit": 1})
        assert beyond["results"] == [] and beyond["count"] == 2

    @pytest.mark.parametrize(
        ("sort", "first"), [("NAME_ASC", "my-flow-1"), ("NAME_DESC", "my-flow-2")]
    )
    async def test_sort(self, api: Dataset, sort: str, first: str) -> None:  # A30
        page = await api.paginate({"sort": sort})
        assert page["results"][0]["name"] == first

    async def test_limit_zero(self, api: Dataset) -> None:  # A32
        assert await api.paginate({"limit": 0}) == {
            "results": [],
            "count": 2,
            "limit": 0,
            "pages": 0,
            "page": 1,
        }

    async def test_pages_round_up(self, api: Dataset) -> None:
        assert (await api.paginate({"limit": 3}))["pages"] == 1
        filtered = await api.paginate({"limit": 1, "flows": {"name": {"any_": []}}})
        assert (filtered["count"], filtered["pages"]) == (0, 0)


# --- Large any_ lists and deterministic ties -----------------------------------------------------

BIG = 100_000


def many_seed() -> Seed:
    s = Seed()
    for i in range(40):
        # Equal timestamps: only the id tie-breaker orders them.
        s.flow(f"flow-{i:02d}", created=T0, updated=T0)
    s.flow_run("run-of-07", "flow-07")
    return s


@pytest.fixture(scope="module")
async def many(backend: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dataset]:
    async with seeded(backend, tmp_path_factory.mktemp("many"), many_seed()) as data:
        yield data


def random_ids(count: int) -> list[str]:
    rng = random.Random(11)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


class TestLargeAnyLists:
    async def test_any_of_100k_ids(self, many: Dataset) -> None:
        wanted = [many.ids["flow-03"], many.ids["flow-31"]]
        ids = random_ids(BIG - 2) + wanted
        random.Random(3).shuffle(ids)
        body = {"flows": {"id": {"any_": ids}}}
        assert await many.names(body) == ["flow-03", "flow-31"]
        assert await many.count(body) == 2

    async def test_not_any_of_100k_ids(self, many: Dataset) -> None:
        ids = [*random_ids(BIG - 1), many.ids["flow-05"]]
        names = await many.names({"flows": {"id": {"not_any_": ids}}})
        assert len(names) == 39 and "flow-05" not in names

    async def test_any_of_100k_run_ids_and_names(self, many: Dataset) -> None:
        run_ids = [*random_ids(BIG - 1), many.ids["run-of-07"]]
        assert await many.names({"flow_runs": {"id": {"any_": run_ids}}}) == ["flow-07"]
        names = [f"nope-{i}" for i in range(BIG)] + ["flow-09"]
        assert await many.count({"flows": {"name": {"any_": names}}}) == 1

    def test_a_long_list_is_one_bound_parameter(self) -> None:
        request = parse_filter_request({"flows": {"id": {"any_": random_ids(1000)}}})
        where = flows_where(request.filters, "sqlite")
        assert where is not None
        assert len(where.compile(dialect=sqlite.dialect()).params) == 1

    async def test_ties_are_broken_by_id(self, many: Dataset) -> None:
        by_id = [name for name, _ in sorted(many.ids.items(), key=lambda kv: kv[1])]
        by_id = [n for n in by_id if n.startswith("flow-")]
        assert await many.names({"sort": "CREATED_DESC"}) == by_id
        assert await many.names({"sort": "UPDATED_DESC"}) == by_id
        pages = [
            await many.names({"sort": "CREATED_DESC", "limit": 7, "offset": o})
            for o in range(0, 42, 7)
        ]
        assert [n for page in pages for n in page] == by_id


def test_unsupported_dialect_is_refused() -> None:
    request = parse_filter_request({"flows": {"name": {"any_": ["a"]}}})
    with pytest.raises(ValueError, match="unsupported SQL dialect"):
        flows_where(request.filters, "mysql")


# --- integers beyond 64 bits and U+0000 (issue 9) ------------------------------------------------


async def test_label_integers_beyond_64_bits_are_stored_exactly(
    backend: str, tmp_path: Path
) -> None:
    # Prefect 3.9.1: `"labels": {"n": 9223372036854775808}` is stored and read back as that integer.
    labels = {"n": 2**63, "big": 10**30, "low": -(2**64) - 1, "f": 1.5}
    seed = Seed()
    seed.flow("big-labels", labels=labels)
    async with seeded(backend, tmp_path, seed) as data, data.engine.connect() as conn:
        found = await read_flow_by_name(conn, "big-labels")
    assert found is not None and found["labels"] == labels
    assert type(found["labels"]["n"]) is int


def nul_seed() -> Seed:
    s = Seed()
    s.flow("nul\x00byte", ["x\x00y"])
    s.flow("nul", ["x"])
    s.flow("plain", ["y"])
    s.flow_run("r-plain", "plain", idempotency_key=None)
    s.flow_run("r-nul", "nul", idempotency_key="k\x00")
    s.flow_run("r-nul-byte", "nul\x00byte", idempotency_key="other")
    return s


@pytest.fixture(scope="module")
async def nul(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dataset]:
    # SQLite only: PostgreSQL text cannot hold U+0000 at all (README).
    async with seeded("sqlite", tmp_path_factory.mktemp("nul"), nul_seed()) as data:
        yield data


class TestNulInValues:
    """SQLite's JSON functions cut a string at U+0000; the value lists must not."""

    async def test_name_any_finds_exactly_that_name(self, nul: Dataset) -> None:
        # Prefect 3.9.1: `{"flows": {"name": {"any_": ["nul\u0000byte"]}}}` finds that flow.
        assert await nul.names({"flows": {"name": {"any_": ["nul\x00byte"]}}}) == ["nul\x00byte"]
        both = {"flows": {"name": {"any_": ["plain", "nul\x00byte"]}}}
        assert await nul.names(both) == ["nul\x00byte", "plain"]
        assert await nul.count(both) == 2

    async def test_not_any(self, nul: Dataset) -> None:
        runs = {"flow_runs": {"idempotency_key": {"not_any_": ["k\x00", "zzz"]}}}
        # SQL's rule holds: a NULL key is never NOT IN anything.
        assert await nul.names(runs) == ["nul\x00byte"]
        only_nul = {"flow_runs": {"idempotency_key": {"not_any_": ["k\x00"]}}}
        assert await nul.names(only_nul) == ["nul\x00byte"]

    async def test_read_by_name_and_like_agree(self, nul: Dataset) -> None:
        async with nul.engine.connect() as conn:
            found = await read_flow_by_name(conn, "nul\x00byte")
        assert found is not None and found["tags"] == ["x\x00y"]
        # Prefect 3.9.1 finds it with `like_ "nul\u0000b"`: the same SQL (`lower(name) LIKE`),
        # whose functions stop at the NUL on both sides, so "nul" matches too.
        like = {"flows": {"name": {"like_": "nul\x00b"}}}
        assert await nul.names(like) == ["nul", "nul\x00byte"]

    async def test_cross_entity_value_lists(self, nul: Dataset) -> None:
        runs = {"flow_runs": {"idempotency_key": {"any_": ["k\x00"]}}}
        assert await nul.names(runs) == ["nul"]

    async def test_tags_all_match_exactly(self, nul: Dataset) -> None:
        # Prefect's SQLite also matches the flows tagged "x" here (its json_each cuts both
        # sides at the NUL); the service matches the tag itself (README).
        exact = {"flows": {"tags": {"all_": ["x\x00y"]}}}
        assert await nul.names(exact) == ["nul\x00byte"]
        assert await nul.count(exact) == 1
        assert await nul.names({"flows": {"tags": {"all_": ["x"]}}}) == ["nul"]
        assert await nul.count({"flows": {"tags": {"all_": ["x", "x\x00y"]}}}) == 0
