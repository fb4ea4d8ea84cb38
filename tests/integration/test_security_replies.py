"""A request's reply subject is the sender's to choose: the service answers only on inboxes.

Against a real nats-server with no permissions at all (the service's own check is the only
guard here; tests/integration/test_security_permissions.py proves the shipped layout refuses the
same attacks by itself): a hostile client sends requests whose reply subject is the event log
(`P.events.<id>`), a live name's claim (`P.names.<digest>`), a stored reply, a request subject,
or the JetStream API. Each request is refused unexecuted: nothing at all is published on the
targeted subject, the stream gains no message, creates of the targeted name still answer as
Prefect does, `P.audit.stats` stays "ok" and counts the refusals. Hypothesis then picks reply
subjects itself, and whatever the service publishes lands only where the policy allows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from events.contract.subjects import Subjects
from services.nats_flush import flush_all
from services.reply_policy import ReplyPolicy
from services.settings import Settings
from tests.integration.conftest import Wire, running
from tests.integration.wire import assert_success, call

# The request subjects a hostile client sends to, with a body each answers (or refuses).
REQUESTS: list[tuple[str, Any]] = [
    ("query.read", {"id": str(uuid.uuid4())}),
    ("query.count", {}),
    ("cmd.create", {"name": "planted"}),
    ("cmd.delete", {"id": str(uuid.uuid4())}),
    ("audit.history", {"id": str(uuid.uuid4())}),
    ("audit.stats", {}),
]


class Listener:
    """Every message published on some subjects, as a plain subscriber sees it."""

    def __init__(self) -> None:
        self.seen: list[Msg] = []

    async def record(self, message: Msg) -> None:
        self.seen.append(message)


async def stream_end(nc: NatsClient, stream: str) -> tuple[int, int]:
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.messages), int(info.state.last_seq)


async def stats(nc: NatsClient, prefix: str) -> dict[str, Any]:
    reply = await call(nc, prefix, "audit.stats")
    assert_success(reply, 200)
    result: dict[str, Any] = reply.json
    return result


async def wait_for_refusals(
    nc: NatsClient, prefix: str, total: int, timeout_s: float = 10.0
) -> None:
    """Until the service has refused `total` requests (it counts each one it refuses)."""
    deadline = time.monotonic() + timeout_s
    while True:
        refused = sum((await stats(nc, prefix))["refused_requests"].values())
        if refused >= total:
            assert refused == total, refused
            return
        assert time.monotonic() < deadline, f"only {refused} of {total} refusals counted"
        await flush_all(nc)


class TestRepliesOnlyGoToInboxes:
    async def test_no_injected_reply_reaches_the_log_a_name_or_the_jetstream_api(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        subjects = Subjects(service.subject_prefix)
        created = await wire("cmd.create", {"name": "victim", "tags": ["t"]})
        assert_success(created, 201)
        flow_id = created.json["id"]
        targets = [
            subjects.event(flow_id),
            subjects.event(str(uuid.uuid4())),
            subjects.name("victim"),
            subjects.reply("some-command-id"),
            f"$JS.API.CONSUMER.DELETE.{service.stream}.anything",
            f"$JS.API.STREAM.DELETE.{service.stream}",
            f"$JS.API.STREAM.PURGE.{service.stream}",
            "$SYS.REQ.SERVER.PING",
            subjects.command("create"),
            subjects.query("read"),
            subjects.audit("history"),
        ]
        listener = Listener()
        for target in targets:
            await nc.subscribe(target, cb=listener.record)
        before = await stream_end(nc, service.stream)

        for target in targets:
            for operation, body in REQUESTS:
                await nc.publish(
                    f"{service.subject_prefix}.{operation}", orjson.dumps(body), reply=target
                )
        await wait_for_refusals(nc, service.subject_prefix, len(targets) * len(REQUESTS))

        # One more round trip through the server after the last refusal: anything the service
        # had published would have been delivered by now.
        await flush_all(nc)
        # Our own hostile requests (on the request-subject targets) carry a reply subject; a
        # reply from the service would not.
        published = [m for m in listener.seen if not m.reply]
        assert published == [], [(m.subject, m.data[:80]) for m in published]
        # (and each of the 3 request-subject targets got one hostile request per target)
        assert len(listener.seen) == 3 * len(targets), "the listener missed our own requests"
        assert await stream_end(nc, service.stream) == before
        # The planted create was not executed; the victim's name still answers as Prefect does.
        assert (await wire("query.read_by_name", {"name": "planted"})).status == 404
        again = await wire("cmd.create", {"name": "victim"})
        assert_success(again, 200)
        assert again.json == created.json
        health = await stats(nc, service.subject_prefix)
        assert health["status"] == "ok", health
        refused = health["refused_requests"]
        assert refused == {
            f"{service.subject_prefix}.{operation}": len(targets) for operation, _ in REQUESTS
        }

    async def test_discovery_requests_are_held_to_the_same_rule(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        target = Subjects(service.subject_prefix).event(str(uuid.uuid4()))
        listener = Listener()
        await nc.subscribe(target, cb=listener.record)
        before = await stream_end(nc, service.stream)
        await nc.publish("$SRV.PING", b"", reply=target)
        await nc.publish("$SRV.STATS.flows", b"", reply=target)
        deadline = time.monotonic() + 10
        while (await stats(nc, service.subject_prefix))["refused_requests"] != {
            "$SRV.PING": 1,
            "$SRV.STATS.flows": 1,
        }:
            assert time.monotonic() < deadline, "the discovery requests were not refused"
        await flush_all(nc)
        assert listener.seen == []
        assert await stream_end(nc, service.stream) == before

    async def test_a_request_with_no_reply_subject_still_works_and_is_not_refused(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        """A plain publish (no reply wanted) is no injection: a command without a reply
        subject still takes effect, as NATS fire-and-forget publishes do."""
        await nc.publish(f"{service.subject_prefix}.cmd.create", b'{"name": "fire-and-forget"}')
        deadline = time.monotonic() + 10
        while (await wire("query.read_by_name", {"name": "fire-and-forget"})).status != 200:
            assert time.monotonic() < deadline, "the fire-and-forget create never took effect"
            await flush_all(nc)
        assert (await stats(nc, service.subject_prefix))["refused_requests"] == {}


class TestTheNameGuardSurvivesGarbage:
    """A message on a name subject that is not a valid claim, put there by any means, never
    turns creates of that name into 500s: the writer acts on the latest valid claim."""

    @pytest.mark.parametrize("garbage", [b'{"detail":"Flow not found"}', b"\xff not json", b"[]"])
    async def test_creates_of_a_held_name_still_answer_200_with_the_holder(
        self, wire: Wire, nc: NatsClient, service: Settings, garbage: bytes
    ) -> None:
        subjects = Subjects(service.subject_prefix)
        created = await wire("cmd.create", {"name": "held"})
        assert_success(created, 201)
        await nc.jetstream().publish(subjects.name("held"), garbage)

        again = await wire("cmd.create", {"name": "held", "tags": ["other"]})
        assert_success(again, 200)
        assert again.json == created.json
        # Deleting it frees the name (guarded on the garbage, the subject's real last message).
        assert_success(await wire("cmd.delete", {"id": created.json["id"]}), 204)
        await nc.jetstream().publish(subjects.name("held"), garbage)
        recreated = await wire("cmd.create", {"name": "held"})
        assert_success(recreated, 201)
        assert recreated.json["id"] != created.json["id"]
        assert_success(await wire("cmd.create", {"name": "held"}), 200)

    async def test_a_retry_finds_its_stored_reply_despite_garbage_after_it(
        self, wire: Wire, nc: NatsClient, service: Settings
    ) -> None:
        subjects = Subjects(service.subject_prefix)
        headers = {"Nats-Msg-Id": "retry-me"}
        first = await wire("cmd.create", {"name": "retried"}, headers)
        assert_success(first, 201)
        await nc.jetstream().publish(subjects.reply("retry-me"), b'{"detail":"Flow not found"}')
        second = await wire("cmd.create", {"name": "retried"}, headers)
        assert_success(second, 201)
        assert second.json == first.json
        assert second.position == first.position


# -- hypothesis: reply subjects of its choosing ------------------------------------------------

PREFIX_FOR_FUZZ = "fz"
tokens = st.text(alphabet="abcXYZ019_-$*>", min_size=0, max_size=6)
reply_subjects = st.one_of(
    st.builds(
        lambda head, rest: head + ".".join(rest),
        st.sampled_from(
            [
                "_INBOX.", "_INBOX", "_inbox.", "$JS.API.", "$SYS.", "$KV.", "$", "",
                f"{PREFIX_FOR_FUZZ}.events.", f"{PREFIX_FOR_FUZZ}.names.",
                f"{PREFIX_FOR_FUZZ}.replies.", f"{PREFIX_FOR_FUZZ}.cmd.",
                f"{PREFIX_FOR_FUZZ}.query.", f"{PREFIX_FOR_FUZZ}.audit.", "other.", "_INBOX..",
            ]
        ),
        st.lists(tokens, min_size=1, max_size=3),
    ),
    st.text(max_size=12),
)  # fmt: skip


@pytest.fixture
async def fuzzed(settings: Settings, nc: NatsClient) -> AsyncIterator[Settings]:
    import dataclasses

    chosen = dataclasses.replace(settings, subject_prefix=PREFIX_FOR_FUZZ, stream=settings.stream)
    async with running(chosen, nc):
        yield chosen


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(reply=reply_subjects, operation=st.sampled_from([op for op, _ in REQUESTS]))
async def test_replies_land_only_where_the_policy_allows(
    fuzzed: Settings, nc: NatsClient, reply: str, operation: str
) -> None:
    if reply == "" or any(character.isspace() for character in reply):
        return  # no reply wanted (tested above), or a subject nats-py itself refuses to send
    policy = ReplyPolicy(Subjects(fuzzed.subject_prefix), fuzzed.reply_prefixes)
    allowed = policy.refusal(reply) is None
    # Watch everything: whatever the service publishes for this request shows up here.
    listener = Listener()
    watch = await nc.subscribe(">", cb=listener.record)
    try:
        before = await stream_end(nc, fuzzed.stream)
        refused_before = sum((await stats(nc, fuzzed.subject_prefix))["refused_requests"].values())
        body = orjson.dumps(dict(REQUESTS)[operation])
        await nc.publish(f"{fuzzed.subject_prefix}.{operation}", body, reply=reply)
        if allowed:
            deadline = time.monotonic() + 10
            while not [m for m in listener.seen if m.subject == reply]:
                assert time.monotonic() < deadline, f"no reply on allowed subject {reply!r}"
                await flush_all(nc)
            return
        await wait_for_refusals(nc, fuzzed.subject_prefix, refused_before + 1)
        await flush_all(nc)
        assert [m for m in listener.seen if m.subject == reply] == [], reply
        assert await stream_end(nc, fuzzed.stream) == before, reply
    finally:
        await watch.unsubscribe()
