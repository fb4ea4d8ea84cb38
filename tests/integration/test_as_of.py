"""`Flows-As-Of`: queries answered as of an earlier log position or time match, byte for byte, what
the live model answered when it had applied the log up to that point.

A single client runs a mixed workload one command at a time, so after each command reply the
live model is exactly at the reply's position; the live answers recorded there are the reference.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog
from projections.as_of import AsOfModels, AsOfRefused
from projections.as_of_builder import AsOfBuilder
from services.client import AsOf, FlowsClient, Reply
from services.settings import Settings
from tests import backends
from tests.integration.conftest import Wire, running


@pytest.fixture
def client(service: Settings, nc: NatsClient) -> FlowsClient:
    return FlowsClient(nc, service.subject_prefix)


@dataclass
class Snapshot:
    position: int
    moment: datetime  # after the command's reply, before the next command was sent
    answers: dict[str, Any]


async def answers(client: FlowsClient, ids: list[str], as_of: AsOf | None = None) -> dict[str, Any]:
    """The same set of queries, live or as of a point; bodies and statuses."""

    def shown(reply: Reply) -> Any:
        return (reply.status, reply.body)

    found: dict[str, Any] = {
        "count": shown(await client.count(as_of=as_of)),
        "count_tag_a": shown(await client.count(as_of=as_of, flows={"tags": {"all_": ["a"]}})),
        "filter": shown(await client.filter(sort="NAME_ASC", as_of=as_of)),
        "filter_updated": shown(await client.filter(sort="UPDATED_DESC", limit=3, as_of=as_of)),
        "paginate": shown(await client.paginate(limit=2, page=2, as_of=as_of)),
        "by_name": shown(await client.read_by_name("flow-1", as_of=as_of)),
    }
    for flow_id in ids[:4]:
        found[f"read {flow_id}"] = shown(await client.read(flow_id, as_of=as_of))
    return found


def read_ids(snapshot: Snapshot) -> list[str]:
    """The flows a snapshot read by id (those created by then)."""
    return [key.split(" ", 1)[1] for key in snapshot.answers if key.startswith("read ")]


async def recorded_workload(client: FlowsClient) -> list[Snapshot]:
    """Commands one at a time; the live answers after each."""
    snapshots: list[Snapshot] = []
    ids: list[str] = []

    async def record(reply: Reply) -> None:
        assert reply.ok, reply
        assert reply.position is not None
        snapshots.append(Snapshot(reply.position, datetime.now(UTC), await answers(client, ids)))

    for i in range(6):
        reply = await client.create(f"flow-{i}", tags=["a", f"t{i}"], labels={"i": i})
        ids.append(reply.body["id"])
        await record(reply)
    await record(await client.update(ids[0], tags=["b"]))
    await record(await client.update(ids[1]))
    await record(await client.delete(ids[1]))
    await record(await client.create("flow-1", tags=["reborn"]))  # the freed name, a new flow
    await record(await client.bulk_delete(flows={"tags": {"all_": ["a"]}}, limit=2))
    await record(await client.update(ids[5], tags=["a", "late"]))
    return snapshots


async def test_as_of_each_position_answers_what_the_live_model_answered_there(
    client: FlowsClient,
) -> None:
    snapshots = await recorded_workload(client)
    assert len({s.position for s in snapshots}) == len(snapshots)

    # Newest first and out of order, so the LRU of scratch models builds and evicts.
    for snapshot in [*reversed(snapshots[::2]), *snapshots[1::2]]:
        as_of = await answers(client, read_ids(snapshot), as_of=snapshot.position)
        assert as_of == snapshot.answers, f"as of position {snapshot.position}"
    # And the live model has moved on: the first snapshot is not today's answer.
    assert await answers(client, read_ids(snapshots[0])) != snapshots[0].answers


async def test_as_of_a_time_answers_as_of_the_last_position_stored_by_then(
    client: FlowsClient,
) -> None:
    snapshots = await recorded_workload(client)
    for snapshot in snapshots[::3]:
        stamp = snapshot.moment.isoformat().replace("+00:00", "Z")
        assert await answers(client, read_ids(snapshot), as_of=stamp) == snapshot.answers, stamp
        reply = await client.count(as_of=stamp)
        assert reply.headers["Flows-Position"] == str(snapshot.position)
    before_anything = await client.filter(as_of="2000-01-01T00:00:00Z")
    assert (before_anything.status, before_anything.body) == (200, [])


SQLITE_ONLY = backends.only(backends.SQLITE)


@SQLITE_ONLY
@pytest.mark.parametrize("value", ["yesterday", "-1", "12abc", "2026-13-01T00:00:00Z"])
async def test_a_bad_as_of_header_is_a_422_in_prefects_shape(wire: Wire, value: str) -> None:
    reply = await wire("query.count", {}, headers={"Flows-As-Of": value})
    assert reply.status == 422, reply
    assert reply.json["exception_message"] == "Invalid request received."
    [error] = reply.json["exception_detail"]
    assert error["loc"] == ["header", "Flows-As-Of"]
    assert error["input"] == value
    assert reply.headers["Nats-Service-Error-Code"] == "422"


@SQLITE_ONLY
async def test_a_position_past_the_end_of_the_log_is_refused(
    client: FlowsClient, service: Settings
) -> None:
    made = await client.create("only")
    assert made.position is not None
    reply = await client.count(as_of=made.position + 1000)
    assert reply.status == 422
    assert "past the end of the event log" in reply.body["detail"]
    assert (await client.count(as_of=made.position)).body == 1


@SQLITE_ONLY
async def test_a_point_costlier_than_the_cap_is_refused_with_what_to_do(
    client: FlowsClient, service: Settings, nc: NatsClient
) -> None:
    made = await asyncio.gather(*(client.create(f"c-{i}") for i in range(10)))
    end = max(reply.position or 0 for reply in made)
    subjects = Subjects(service.subject_prefix)
    event_log = JetStreamLog(nc, subjects, service.stream)
    builder = AsOfBuilder(event_log, subjects, None, every=0, max_events=5)
    models = AsOfModels(event_log, builder)
    try:
        with pytest.raises(AsOfRefused, match="more than this service's limit of 5"):
            async with models.connect(end):
                pass
        async with models.connect(4):  # within the cap: answers
            pass
    finally:
        await models.close()


async def test_the_cap_is_a_setting(settings: Settings, nc: NatsClient) -> None:
    capped = dataclasses.replace(settings, as_of_max_events=3)
    async with running(capped, nc):
        client = FlowsClient(nc, capped.subject_prefix)
        made = [await client.create(f"s-{i}") for i in range(4)]
        end = made[-1].position
        assert end is not None and end > 3
        refused = await client.count(as_of=end)
        assert refused.status == 422, refused
        assert "limit of 3 for as-of queries (FLOWS_AS_OF_MAX_EVENTS)" in refused.body["detail"]
        assert (await client.count(as_of=2)).status == 200
