"""Hostile input against a running service (real nats-server, SQLite read model).

Property: for any body and headers on any subject of the contract, the service answers — a reply
with a `Flows-Status` below 500, error replies with the contract's error headers, a JSON body —
and keeps answering. Then the edges a generator rarely reaches: payloads around NATS max_payload,
deeply nested JSON, and filters whose `any_` lists hold 100k values.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from events.contract.subjects import AUDITS, COMMANDS, HEALTH, QUERIES
from services.embedded import EmbeddedNats
from services.settings import Settings
from tests.integration.conftest import running
from tests.integration.wire import WireReply, call

SUBJECTS = (
    [f"cmd.{name}" for name in COMMANDS]
    + [f"query.{name}" for name in QUERIES]
    + [f"audit.{name}" for name in AUDITS + HEALTH]
)
# The field names of every request body, so generated objects often hit real parameters.
FIELDS = [
    "id", "name", "tags", "labels", "flows", "flow_runs", "task_runs", "deployments",
    "work_pools", "limit", "offset", "sort", "page", "any_", "all_", "not_any_", "like_",
    "is_null_", "operator", "after", "flow_id", "types", "parked_limit", "before_", "after_",
    "start_time", "state", "type", "work_queue_name", "deployment_id", "parent_task_run_id",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: Python's json reads them
    | st.text(max_size=20)
    | st.sampled_from(["NAME_ASC", "FlowCreated", str(uuid.uuid4()), "2026-01-01T00:00:00Z"])
)
keys = st.sampled_from(FIELDS) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)
bodies = st.one_of(
    st.binary(max_size=120),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(keys, json_values, max_size=6).map(lambda value: json.dumps(value).encode()),
)
header_text = st.text(alphabet=string.ascii_letters + string.digits + " -_.:/", max_size=24)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Nats-Msg-Id": header_text,
        # Positions the read model has reached (or garbage), and short waits: a header that
        # asks for a future position is answered with 503 by design (test_consistency.py).
        "Flows-Min-Position": st.sampled_from(["", "0", "-1", "x", "1.5", " 0"]),
        "Flows-Wait-Ms": st.integers(min_value=-5, max_value=50).map(str) | header_text,
        "X-Anything": header_text,
    },
)


@pytest.fixture
async def fuzzed(settings: Settings, nc: NatsClient) -> AsyncIterator[Settings]:
    async with running(settings, nc):
        yield settings


def assert_answered(reply: WireReply, subject: str, body: bytes) -> None:
    where = (subject, body[:200], reply.status, reply.data[:300])
    assert reply.status < 500, where
    if reply.status >= 400:
        assert reply.headers.get("Nats-Service-Error-Code") == str(reply.status), where
        assert reply.headers.get("Nats-Service-Error"), where
    if reply.data:
        orjson.loads(reply.data)


@pytest.mark.parametrize("subject", SUBJECTS)
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, request_headers=headers)
async def test_any_body_and_headers_get_an_answer_below_500(
    fuzzed: Settings, nc: NatsClient, subject: str, body: bytes, request_headers: dict[str, str]
) -> None:
    reply = await call(nc, fuzzed.subject_prefix, subject, body, request_headers, timeout=10)
    assert_answered(reply, subject, body)


async def test_the_service_still_answers_after_hostile_input(
    fuzzed: Settings, nc: NatsClient
) -> None:
    # Prefect's answers: malformed JSON is a 422, what its parser cannot read at all a 400.
    not_json = [
        (b"\xff\xfe", 422),
        (b"{" * 5000, 422),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b"1e999999x", 422),
        (b"\xff\xfe\x00", 400),
    ]
    for subject in SUBJECTS:
        for body, status in not_json:
            reply = await call(nc, fuzzed.subject_prefix, subject, body)
            assert_answered(reply, subject, body)
            assert reply.status == status, (subject, body[:20], reply)
    created = await call(nc, fuzzed.subject_prefix, "cmd.create", {"name": "still-alive"})
    assert created.status == 201


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(("depth", "status"), [(50, 422), (200, 422), (300, 400), (900, 400)])
async def test_deeply_nested_json_gets_an_answer(
    fuzzed: Settings, nc: NatsClient, depth: int, status: int
) -> None:
    body = json.dumps({"name": f"deep-{depth}", "labels": nested(depth)}).encode()
    created = await call(nc, fuzzed.subject_prefix, "cmd.create", body)
    assert_answered(created, "cmd.create", body)
    # Labels hold scalars only (a 422, as Prefect validates); past MAX_DEPTH (250) levels the
    # body itself is refused with the parser's 400 (Prefect: past ~950).
    assert created.status == status, created
    filtered = json.dumps({"flows": nested(depth)}).encode()
    reply = await call(nc, fuzzed.subject_prefix, "query.filter", filtered)
    assert_answered(reply, "query.filter", filtered)
    assert reply.status == status, reply


class TestPayloadSize:
    async def test_above_max_payload_the_client_gets_an_error(
        self, fuzzed: Settings, nc: NatsClient
    ) -> None:
        too_big = orjson.dumps({"name": "x" * nc.max_payload})
        with pytest.raises(nats.errors.MaxPayloadError):
            await call(nc, fuzzed.subject_prefix, "cmd.create", too_big)

    async def test_just_under_max_payload_the_service_answers(
        self, fuzzed: Settings, nc: NatsClient
    ) -> None:
        # The create's event, name marker and stored reply each carry the name: leave room
        # for their envelopes.
        name = "n" * (nc.max_payload - 4096)
        body = orjson.dumps({"name": name})
        created = await call(nc, fuzzed.subject_prefix, "cmd.create", body, timeout=20)
        assert_answered(created, "cmd.create", body)
        assert created.status == 201, created.data[:300]
        query = orjson.dumps({"flows": {"name": {"any_": [name]}}, "limit": 1})
        found = await call(nc, fuzzed.subject_prefix, "query.filter", query, timeout=20)
        assert found.status == 200 and found.json[0]["name"] == name


class TestHugeAnyLists:
    """100k values in one `any_`: above SQLite's bound-parameter limit (32766)."""

    async def test_100k_ids_and_names_in_any_are_answered(
        self, tmp_path: Path, settings: Settings
    ) -> None:
        server = EmbeddedNats(tmp_path / "nats", max_payload=8 * 1024 * 1024)
        server.start()
        try:
            nc = await nats.connect(server.url)
            try:
                local = Settings(
                    nats_url=server.url,
                    nats_url_explicit=True,
                    subject_prefix=settings.subject_prefix,
                    stream=settings.stream,
                    data_dir=settings.data_dir,
                )
                async with running(local, nc):
                    await self._check(nc, local.subject_prefix)
            finally:
                await nc.close()
        finally:
            server.stop()

    async def _check(self, nc: NatsClient, prefix: str) -> None:
        made = [await call(nc, prefix, "cmd.create", {"name": f"huge-{i}"}) for i in range(3)]
        ids = [reply.json["id"] for reply in made]
        noise = [str(uuid.uuid4()) for _ in range(100_000)]
        body = {"flows": {"id": {"any_": [*noise[:50_000], *ids, *noise[50_000:]]}}}
        counted = await call(nc, prefix, "query.count", body, timeout=30)
        assert (counted.status, counted.json) == (200, 3), counted.data[:300]
        names = [f"n{i}" for i in range(100_000)] + ["huge-1"]
        filtered = await call(
            nc, prefix, "query.filter", {"flows": {"name": {"any_": names}}}, timeout=30
        )
        assert filtered.status == 200 and [f["name"] for f in filtered.json] == ["huge-1"]
        excluded = {"flows": {"id": {"not_any_": noise + ids[:2]}}}
        left = await call(nc, prefix, "query.filter", excluded, timeout=30)
        assert left.status == 200 and [f["id"] for f in left.json] == ids[2:], left.data[:300]
        deleted = await call(
            nc, prefix, "cmd.bulk_delete", {"flows": {"id": {"any_": noise + ids[:1]}}}, timeout=30
        )
        assert deleted.status == 200 and deleted.json == {"deleted": ids[:1]}, deleted.data[:300]
