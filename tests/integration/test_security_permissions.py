"""The shipped permission layout (deploy/nats/nats-server.conf): only the service writes the log,
the service answers only on inboxes, and each user reads only its own replies.

A real nats-server runs with the shipped config file as it is (passwords from the environment,
as in docker-compose.yml; only the port and store dir come from the command line). The service
answers requests as `flows-service` and owns the log as `flows-log`; a client connected as
`flows-client` creates and reads flows through the service, then tries to write the log itself:
a forged event on `flows.events.<id>`, a JetStream stream delete and purge through `$JS.API`, and
a subscription to the service's request subjects. Then it sends requests whose reply subject is
the log, a name's claim or the JetStream API. nats-server refuses each one by itself, also when
the answering side is a naive responder signed in as `flows-service` that would answer anywhere,
and the log holds exactly what it held before.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from events.contract.subjects import Subjects
from services.app import create_app
from services.client import FlowsClient
from services.embedded import EmbeddedNats
from services.nats_connection import NatsRefused, connect_nats
from services.nats_flush import flush_all
from services.settings import Settings

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "nats-server.conf"
# The subject prefix and stream the shipped config is written for.
PREFIX, STREAM = "flows", "FLOWS"
SERVICE_PASSWORD = "svc-" + uuid.uuid4().hex
LOG_PASSWORD = "log-" + uuid.uuid4().hex
CLIENT_PASSWORD = "cli-" + uuid.uuid4().hex
AUDITOR_PASSWORD = "aud-" + uuid.uuid4().hex


@pytest.fixture
def shipped_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedNats]:
    # nats-server reads the `$FLOWS_*_PASSWORD`s from its environment, which it inherits from
    # this process.
    monkeypatch.setenv("FLOWS_SERVICE_PASSWORD", SERVICE_PASSWORD)
    monkeypatch.setenv("FLOWS_LOG_PASSWORD", LOG_PASSWORD)
    monkeypatch.setenv("FLOWS_CLIENT_PASSWORD", CLIENT_PASSWORD)
    monkeypatch.setenv("FLOWS_AUDITOR_PASSWORD", AUDITOR_PASSWORD)
    server = EmbeddedNats(tmp_path / "nats", config=SHIPPED_CONFIG)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def service_as_service_user(
    shipped_server: EmbeddedNats, tmp_path: Path
) -> AsyncIterator[Settings]:
    settings = Settings(
        nats_url=shipped_server.url,
        nats_url_explicit=True,
        subject_prefix=PREFIX,
        stream=STREAM,
        data_dir=tmp_path / "data",
        nats_user="flows-service",
        nats_password=SERVICE_PASSWORD,
        nats_log_user="flows-log",
        nats_log_password=LOG_PASSWORD,
    )
    app = create_app(settings)
    try:
        await app.start()
        yield settings
    finally:
        await app.stop()


class Refusals:
    """The errors the server sends one connection (permission violations leave it open)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, error: Exception) -> None:
        self.seen.append(str(error))

    async def wait_for(self, fragment: str, times: int = 1, timeout_s: float = 5.0) -> None:
        """Until the server has sent `times` errors containing `fragment` (nats-py lowercases
        them)."""
        fragment = fragment.lower()
        deadline = time.monotonic() + timeout_s
        while sum(fragment in text.lower() for text in self.seen) < times:
            if time.monotonic() > deadline:
                raise AssertionError(f"not {times}x {fragment!r} from the server: {self.seen}")
            await asyncio.sleep(0.01)


async def connect(server: EmbeddedNats, user: str, password: str, errors: Refusals) -> NatsClient:
    return await nats.connect(
        server.url,
        user=user,
        password=password,
        error_cb=errors.record,
        allow_reconnect=False,
        inbox_prefix=f"_INBOX.{user}",  # each user's own, as the service's connections use
    )


async def log_state(server: EmbeddedNats) -> tuple[int, int]:
    """(messages, last position) of the event log, read as the log's owner."""
    nc = await connect(server, "flows-log", LOG_PASSWORD, Refusals())
    try:
        info = await nc.jetstream().stream_info(STREAM)
        return info.state.messages, info.state.last_seq
    finally:
        await nc.close()


async def test_only_the_service_writes_the_log(
    shipped_server: EmbeddedNats, service_as_service_user: Settings
) -> None:
    errors = Refusals()
    nc = await connect(shipped_server, "flows-client", CLIENT_PASSWORD, errors)
    try:
        # The client uses the service: create, read, history.
        client = FlowsClient(nc, PREFIX)
        created = await client.create("guarded", tags=["a"])
        assert created.status == 201, created
        flow_id = created.body["id"]
        assert (await client.read(flow_id)).body["name"] == "guarded"
        before = await log_state(shipped_server)
        assert before[0] >= 1

        # A forged event for that flow, as a plain publish and as a JetStream publish (which
        # asks for the stream's acknowledgement on an inbox).
        forged = orjson.dumps(
            {"type": "flow.deleted", "flow_id": flow_id, "data": {}, "id": str(uuid.uuid4())}
        )
        event_subject = f"{PREFIX}.events.{flow_id}"
        await nc.publish(event_subject, forged)
        await nc.publish(event_subject, forged, reply=nc.new_inbox())
        # The JetStream API: delete or purge the stream.
        await nc.publish(f"$JS.API.STREAM.DELETE.{STREAM}", b"")
        await nc.publish(f"$JS.API.STREAM.PURGE.{STREAM}", b"")
        # Impersonating the service: take requests meant for it.
        await nc.subscribe(f"{PREFIX}.cmd.*", queue="flows")
        await flush_all(nc)

        await errors.wait_for(f'Permissions Violation for Publish to "{event_subject}"', times=2)
        await errors.wait_for(
            f'Permissions Violation for Publish to "$JS.API.STREAM.DELETE.{STREAM}"'
        )
        await errors.wait_for(
            f'Permissions Violation for Publish to "$JS.API.STREAM.PURGE.{STREAM}"'
        )
        await errors.wait_for(f'Permissions Violation for Subscription to "{PREFIX}.cmd.*"')

        # The log is unchanged, and the service still holds and serves the flow as it was.
        assert await log_state(shipped_server) == before
        read = await client.read(flow_id)
        assert read.status == 200, read
        assert read.body["tags"] == ["a"]
        history = await client.history(flow_id)
        assert history.status == 200, history
        assert [event["type"] for event in history.body] == ["FlowCreated"]
        # Through the service, the client still writes: its requests are the only way in.
        updated = await client.update(flow_id, tags=["b"])
        assert updated.status == 204, updated
        assert await log_state(shipped_server) == (before[0] + 1, before[1] + 1)
        # The log lives in the test's directory, not in one the shipped config names.
        assert (shipped_server.store_dir / "jetstream" / "FLOWS" / "streams" / STREAM).is_dir()
    finally:
        await nc.close()


async def test_injected_reply_subjects_are_refused_by_the_service_and_by_the_server(
    shipped_server: EmbeddedNats, service_as_service_user: Settings
) -> None:
    """Requests whose reply subject is the log, a live name's claim, a stored reply or the
    JetStream API: the service refuses them (it answers on inboxes only), and a naive responder
    signed in as flows-service that would answer anywhere is refused by nats-server itself."""
    errors = Refusals()
    nc = await connect(shipped_server, "flows-client", CLIENT_PASSWORD, errors)
    subjects = Subjects(PREFIX)
    try:
        client = FlowsClient(nc, PREFIX)
        created = await client.create("victim")
        assert created.status == 201, created
        targets = [
            subjects.event(created.body["id"]),
            subjects.name("victim"),
            subjects.reply("a-command-id"),
            f"$JS.API.CONSUMER.DELETE.{STREAM}.anything",
            f"$JS.API.STREAM.DELETE.{STREAM}",
        ]
        before = await log_state(shipped_server)
        # 1. The real service: refused unexecuted (the create of "planted" never happens).
        for target in targets:
            await nc.publish(f"{PREFIX}.cmd.create", b'{"name": "planted"}', reply=target)
            await nc.publish(f"{PREFIX}.query.read", b'{"id": "x"}', reply=target)
        deadline = time.monotonic() + 10
        while True:
            health = (await client.request("audit.stats", {})).body
            if sum(health["refused_requests"].values()) == 2 * len(targets):
                break
            assert time.monotonic() < deadline, health
        assert health["status"] == "ok", health
        assert await log_state(shipped_server) == before
        assert (await client.read_by_name("planted")).status == 404
        again = await client.create("victim")
        assert again.status == 200, again
        assert again.body == created.body

        # 2. A responder without the service's check, as flows-service: the server refuses
        # every such reply (flows-service may publish on inboxes only).
        responder_errors = Refusals()
        responder = await connect(
            shipped_server, "flows-service", SERVICE_PASSWORD, responder_errors
        )
        try:

            async def answer_anywhere(message: Msg) -> None:
                await responder.publish(message.reply, b'{"detail":"Flow not found"}')

            await responder.subscribe(f"{PREFIX}.audit.*", queue="naive", cb=answer_anywhere)
            await flush_all(responder)
            for target in targets:
                # Sent to a subject only the naive responder hears (no service handler).
                await nc.publish(f"{PREFIX}.audit.naive", b"{}", reply=target)
            await flush_all(nc)
            for target in targets:
                await responder_errors.wait_for(f'Permissions Violation for Publish to "{target}"')
        finally:
            await responder.close()
        assert await log_state(shipped_server) == before
    finally:
        await nc.close()


async def test_each_user_reads_only_its_own_replies(
    shipped_server: EmbeddedNats, service_as_service_user: Settings, tmp_path: Path
) -> None:
    """Clients get private inbox prefixes: the service's client and CLI settings pick
    `_INBOX.<user>` by themselves; another user's inbox (or every inbox) is refused."""
    settings = Settings(
        nats_url=shipped_server.url,
        subject_prefix=PREFIX,
        data_dir=tmp_path / "cli",
        nats_user="flows-auditor",
        nats_password=AUDITOR_PASSWORD,
    )
    auditor = await FlowsClient.connect(settings)
    try:
        count = await auditor.count()
        assert count.status == 200, count
    finally:
        await auditor.close()

    errors = Refusals()
    spy = await connect(shipped_server, "flows-auditor", AUDITOR_PASSWORD, errors)
    try:
        await spy.subscribe("_INBOX.flows-client.>")
        await spy.subscribe("_INBOX.>")
        await flush_all(spy)
        await errors.wait_for('Permissions Violation for Subscription to "_INBOX.flows-client.>"')
        await errors.wait_for('Permissions Violation for Subscription to "_INBOX.>"')
        # An auditor sends no command.
        await spy.publish(f"{PREFIX}.cmd.create", b'{"name": "not-allowed"}')
        await flush_all(spy)
        await errors.wait_for(f'Permissions Violation for Publish to "{PREFIX}.cmd.create"')
    finally:
        await spy.close()

    # The log's owner answers no request: it may not take the service's requests.
    log_errors = Refusals()
    owner = await connect(shipped_server, "flows-log", LOG_PASSWORD, log_errors)
    try:
        await owner.subscribe(f"{PREFIX}.query.*", queue="flows")
        await flush_all(owner)
        await log_errors.wait_for(f'Permissions Violation for Subscription to "{PREFIX}.query.*"')
    finally:
        await owner.close()


async def test_a_client_cannot_sign_in_as_the_service_without_its_password(
    shipped_server: EmbeddedNats, tmp_path: Path
) -> None:
    impostor = Settings(
        nats_url=shipped_server.url,
        nats_user="flows-service",
        nats_password=CLIENT_PASSWORD,
        data_dir=tmp_path / "data",
    )
    with pytest.raises(NatsRefused, match="Authorization Violation"):
        await connect_nats(impostor, "impostor", retry=False)
