"""A command that dies halfway through its append leaves no trace: the name stays free.

A create appends its FlowCreated event and its name marker as one JetStream atomic batch. Here a
client plays a service that crashes after sending the first part of such a batch (no commit):
neither message may ever appear in the log, and the name must be creatable at once.
"""

from __future__ import annotations

import uuid

import nats
import orjson
from nats.aio.client import Client as NatsClient

from events.contract.subjects import Subjects
from events.records import NameMarker
from services.embedded import EmbeddedNats
from services.nats_flush import flush_all
from services.settings import Settings


async def test_a_create_that_dies_before_its_commit_leaves_the_name_free(
    service: Settings, nats_server: EmbeddedNats, nc: NatsClient
) -> None:
    subjects = Subjects(service.subject_prefix)
    orphan = str(uuid.uuid4())
    doomed = await nats.connect(nats_server.url)
    batch = uuid.uuid4().hex
    started = await doomed.request(
        subjects.event(orphan),
        orjson.dumps({"id": str(uuid.uuid4()), "type": "FlowCreated", "flow_id": orphan,
                      "occurred": "2026-01-01T00:00:00Z",
                      "data": {"name": "half", "tags": [], "labels": {}}, "metadata": {}}),
        timeout=5,
        headers={"Nats-Batch-Id": batch, "Nats-Batch-Sequence": "1",
                 "Nats-Expected-Last-Subject-Sequence": "0"},
    )  # fmt: skip
    assert started.data == b""  # the batch is open on the server
    await doomed.publish(
        subjects.name("half"),
        NameMarker("half", orphan, held=True).encode(),
        headers={"Nats-Batch-Id": batch, "Nats-Batch-Sequence": "2"},
    )
    await flush_all(doomed)
    await doomed.close()  # the "service" dies: the commit never comes

    reply = await nc.request(
        f"{service.subject_prefix}.cmd.create", orjson.dumps({"name": "half"}), timeout=10
    )
    assert reply.headers is not None and reply.headers["Flows-Status"] == "201"
    created = orjson.loads(reply.data)
    assert created["id"] != orphan

    js = nc.jetstream()
    info = await js.stream_info(service.stream)
    assert info.state.messages == 2  # the real create's event and marker, nothing of the orphan
    history = await nc.request(
        f"{service.subject_prefix}.audit.events", orjson.dumps({"after": 0}), timeout=10
    )
    assert [event["flow_id"] for event in orjson.loads(history.data)] == [created["id"]]
