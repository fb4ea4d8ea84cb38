"""Several service instances sharing one PostgreSQL read model.

Each instance runs its own projector against the shared database; the checkpoint row, read under
a lock in the same transaction as the rows, makes every event apply exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.app import create_app
from services.settings import Settings

pytestmark = pytest.mark.postgres


async def request(nc: NatsClient, subject: str, body: object, **headers: str) -> tuple[int, object]:
    reply = await nc.request(subject, orjson.dumps(body), timeout=10, headers=headers or None)
    status = int((reply.headers or {})["Flows-Status"])
    return status, orjson.loads(reply.data) if reply.data else None


async def test_two_instances_share_one_postgres_read_model(
    settings: Settings, postgres_database: str, nc: NatsClient
) -> None:
    shared = dataclasses.replace(settings, database_url=postgres_database)
    apps = [create_app(shared), create_app(shared)]
    for app in apps:
        await app.start()
    try:
        prefix = shared.subject_prefix
        results = await asyncio.gather(
            *(request(nc, f"{prefix}.cmd.create", {"name": f"f{i % 20}", "tags": [f"t{i}"]})
              for i in range(60))
        )  # fmt: skip
        assert sorted(status for status, _ in results).count(201) == 20
        ids = {body["id"] for _, body in results}  # type: ignore[index]
        assert len(ids) == 20
        retagged = sorted(ids)[:5]
        for flow_id in retagged:
            status, _ = await request(nc, f"{prefix}.cmd.update", {"id": flow_id, "tags": ["u"]})
            assert status == 204
        status, _ = await request(nc, f"{prefix}.cmd.delete", {"id": retagged[0]})
        assert status == 204
        # Both instances answer from the same tables once their projectors have caught up.
        last = await nc.request(f"{prefix}.cmd.create", orjson.dumps({"name": "last"}), timeout=10)
        position = last.headers["Flows-Position"]  # type: ignore[index]
        counts = set()
        for _ in range(6):  # the queue group spreads these over both instances
            status, count = await request(
                nc, f"{prefix}.query.count", {}, **{"Flows-Min-Position": position}
            )
            assert status == 200
            counts.add(count)
        assert counts == {20}  # 20 created, 1 deleted, 1 more created
        status, tagged = await request(
            nc, f"{prefix}.query.count", {"flows": {"tags": {"all_": ["u"]}}},
            **{"Flows-Min-Position": position},
        )  # fmt: skip
        assert (status, tagged) == (200, 4)  # five retagged, one of them then deleted
    finally:
        for app in apps:
            with contextlib.suppress(Exception):
                await app.stop()
    engine = create_async_engine(postgres_database)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT count(*) FROM flow"))).scalar_one()
            tags = (await conn.execute(text("SELECT count(*) FROM flow_tag"))).scalar_one()
            versions = (await conn.execute(text("SELECT max(version) FROM flow"))).scalar_one()
        assert rows == 20
        # Every live flow has exactly one tag row per distinct tag: nothing applied twice.
        assert tags == 20 - 1  # "last" has no tags; every other flow has one
        assert versions <= int(position)
    finally:
        await engine.dispose()
