"""FlowsClient against a fake nats-py connection (no sockets).

The fake answers `request()` the way nats-py 2.16 does against a real nats-server (checked by
hand): a reply message with `data` and `headers`, or `NoRespondersError` when nobody subscribes,
`nats.errors.TimeoutError` when nobody answers in time, `ConnectionClosedError` after the
connection is gone. What the real service answers is for the integration tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import nats
import nats.errors
import orjson
import pytest

from services.client import (
    BadReply,
    FlowsClient,
    Reply,
    RequestFailed,
    ServiceUnreachable,
)
from services.settings import Settings


@dataclass
class FakeMsg:
    data: bytes
    headers: dict[str, str] | None


@dataclass
class Sent:
    subject: str
    body: Any
    headers: dict[str, str] | None
    timeout: float


def answer(status: int, body: Any = None, **headers: str) -> FakeMsg:
    data = b"" if body is None else orjson.dumps(body)
    return FakeMsg(data, {"Flows-Status": str(status), **headers})


@dataclass
class FakeNats:
    respond: Callable[[str, Any], FakeMsg] = lambda subject, body: answer(200, {})
    sent: list[Sent] = field(default_factory=list)
    connected_url: Any = field(
        default_factory=lambda: urlparse("nats://alice:s3cret@10.0.0.7:4222")
    )
    is_closed: bool = False

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        old_style: bool = False,
        headers: dict[str, str] | None = None,
    ) -> FakeMsg:
        body = orjson.loads(payload) if payload else None
        self.sent.append(Sent(subject, body, headers, timeout))
        return self.respond(subject, body)


def client_for(fake: FakeNats, prefix: str = "flows") -> FlowsClient:
    return FlowsClient(fake, prefix)  # type: ignore[arg-type]


def raising(error: Exception) -> Callable[[str, Any], FakeMsg]:
    def respond(subject: str, body: Any) -> FakeMsg:
        raise error

    return respond


class TestRequestsFollowTheContract:
    @pytest.mark.parametrize(
        ("call", "subject", "body"),
        [
            (lambda c: c.create("etl"), "flows.cmd.create", {"name": "etl"}),
            (
                lambda c: c.create("etl", tags=("a",), labels={"n": 3}),
                "flows.cmd.create",
                {"name": "etl", "tags": ["a"], "labels": {"n": 3}},
            ),
            (lambda c: c.update("F"), "flows.cmd.update", {"id": "F"}),
            (lambda c: c.update("F", tags=[]), "flows.cmd.update", {"id": "F", "tags": []}),
            (lambda c: c.delete("F"), "flows.cmd.delete", {"id": "F"}),
            (lambda c: c.bulk_delete(limit=5), "flows.cmd.bulk_delete", {"limit": 5}),
            (lambda c: c.read("F"), "flows.query.read", {"id": "F"}),
            (lambda c: c.read_by_name("etl"), "flows.query.read_by_name", {"name": "etl"}),
            (lambda c: c.filter(), "flows.query.filter", {}),
            (
                lambda c: c.filter(limit=2, offset=1, sort="NAME_DESC", flows={"id": {}}),
                "flows.query.filter",
                {"limit": 2, "offset": 1, "sort": "NAME_DESC", "flows": {"id": {}}},
            ),
            (
                lambda c: c.count(deployments={"paused": {"eq_": True}}),
                "flows.query.count",
                {"deployments": {"paused": {"eq_": True}}},
            ),
            (lambda c: c.paginate(page=2), "flows.query.paginate", {"page": 2}),
            (lambda c: c.history("F"), "flows.audit.history", {"id": "F"}),
            (
                lambda c: c.events(after=7, limit=10, flow_id="F", types=["FlowDeleted"]),
                "flows.audit.events",
                {"after": 7, "limit": 10, "flow_id": "F", "types": ["FlowDeleted"]},
            ),
        ],
    )
    async def test_subject_and_body(self, call: Any, subject: str, body: Any) -> None:
        fake = FakeNats()
        await call(client_for(fake))
        assert [(s.subject, s.body, s.headers) for s in fake.sent] == [(subject, body, None)]

    async def test_subject_prefix_is_used(self) -> None:
        fake = FakeNats()
        await client_for(fake, "team.flows").read("F")
        assert fake.sent[0].subject == "team.flows.query.read"

    async def test_no_body_sends_an_empty_payload(self) -> None:
        fake = FakeNats()
        await client_for(fake).request("query.count")
        assert fake.sent[0].body is None

    async def test_command_carries_its_msg_id(self) -> None:
        fake = FakeNats()
        await client_for(fake).create("etl", msg_id="retry-1")
        assert fake.sent[0].headers == {"Nats-Msg-Id": "retry-1"}

    async def test_query_carries_the_position_to_wait_for_and_waits_longer(self) -> None:
        fake = FakeNats()
        await client_for(fake).read("F", min_position=42, wait_ms=30_000)
        assert fake.sent[0].headers == {"Flows-Min-Position": "42", "Flows-Wait-Ms": "30000"}
        assert fake.sent[0].timeout > 30

    @pytest.mark.parametrize("prefix", ["", "a..b", "a.*", "flows.>", "my flows"])
    def test_an_unusable_subject_prefix_is_refused(self, prefix: str) -> None:
        with pytest.raises(ValueError, match="invalid subject prefix"):
            client_for(FakeNats(), prefix)


class TestReplies:
    async def test_status_body_headers_and_position(self) -> None:
        flow = {"id": "F", "name": "etl"}
        fake = FakeNats(lambda s, b: answer(201, flow, **{"Flows-Position": "12"}))
        reply = await client_for(fake).create("etl")
        assert reply == Reply(201, flow, {"Flows-Status": "201", "Flows-Position": "12"}, 12)
        assert reply.ok

    async def test_an_empty_body_is_none(self) -> None:
        reply = await client_for(FakeNats(lambda s, b: answer(204))).delete("F")
        assert (reply.status, reply.body, reply.position) == (204, None, None)

    async def test_an_error_status_is_a_reply_not_an_exception(self) -> None:
        fake = FakeNats(lambda s, b: answer(404, {"detail": "Flow not found"}))
        reply = await client_for(fake).read("F")
        assert (reply.status, reply.body, reply.ok) == (404, {"detail": "Flow not found"}, False)
        with pytest.raises(RequestFailed, match="404: Flow not found"):
            reply.raise_for_status()

    async def test_a_bare_integer_body(self) -> None:
        reply = await client_for(FakeNats(lambda s, b: answer(200, 3))).count()
        assert reply.body == 3

    async def test_a_reply_without_flows_status_is_not_from_a_flows_service(self) -> None:
        fake = FakeNats(lambda s, b: FakeMsg(b"{}", None))
        with pytest.raises(BadReply, match="no valid Flows-Status"):
            await client_for(fake).read("F")

    async def test_a_reply_that_is_not_json(self) -> None:
        fake = FakeNats(lambda s, b: FakeMsg(b"<html>", {"Flows-Status": "200"}))
        with pytest.raises(BadReply, match="not JSON"):
            await client_for(fake).read("F")


class TestTransportFailures:
    async def test_no_responders_says_how_to_start_the_service(self) -> None:
        fake = FakeNats(raising(nats.errors.NoRespondersError()))
        with pytest.raises(ServiceUnreachable) as caught:
            await client_for(fake).create("etl")
        message = str(caught.value)
        assert "flows.cmd.create" in message
        assert "flows serve" in message
        assert "nats://***@10.0.0.7:4222" in message
        assert "s3cret" not in message

    async def test_a_timed_out_command_suggests_retrying_with_the_same_msg_id(self) -> None:
        fake = FakeNats(raising(nats.errors.TimeoutError()))
        with pytest.raises(ServiceUnreachable, match="Nats-Msg-Id"):
            await client_for(fake).update("F")

    async def test_a_timed_out_query_does_not_mention_msg_ids(self) -> None:
        fake = FakeNats(raising(nats.errors.TimeoutError()))
        with pytest.raises(ServiceUnreachable, match="did not answer") as caught:
            await client_for(fake).read("F")
        assert "Nats-Msg-Id" not in str(caught.value)

    @pytest.mark.parametrize(
        "error",
        [nats.errors.ConnectionClosedError(), nats.errors.StaleConnectionError(), OSError("x")],
    )
    async def test_a_lost_connection(self, error: Exception) -> None:
        with pytest.raises(ServiceUnreachable, match="lost the connection"):
            await client_for(FakeNats(raising(error))).read("F")

    async def test_connect_fails_fast_with_the_cause(self, monkeypatch: pytest.MonkeyPatch) -> None:
        options: dict[str, Any] = {}

        async def refuse(url: str, **kwargs: Any) -> None:
            options.update(kwargs)
            await kwargs["error_cb"](ConnectionRefusedError(111, "Connect call failed"))
            raise nats.errors.NoServersError

        monkeypatch.setattr(nats, "connect", refuse)
        with pytest.raises(ServiceUnreachable) as caught:
            await FlowsClient.connect(Settings(nats_url="nats://127.0.0.1:4999"))
        assert "nats://127.0.0.1:4999" in str(caught.value)
        assert "Connect call failed" in str(caught.value)
        assert options["allow_reconnect"] is False
        assert options["max_reconnect_attempts"] > 0  # 0 means "forever" in nats-py


class TestIterEvents:
    @staticmethod
    def log(count: int) -> Callable[[str, Any], FakeMsg]:
        events = [{"position": p, "type": "FlowCreated"} for p in range(1, count + 1)]

        def respond(subject: str, body: Any) -> FakeMsg:
            after, limit = body["after"], body["limit"]
            return answer(200, [e for e in events if e["position"] > after][:limit])

        return respond

    async def test_pages_through_the_log_until_an_empty_page(self) -> None:
        fake = FakeNats(self.log(5))
        seen = [e["position"] async for e in client_for(fake).iter_events(page=2)]
        assert seen == [1, 2, 3, 4, 5]
        assert [s.body["after"] for s in fake.sent] == [0, 2, 4, 5]

    async def test_starts_after_a_position_and_passes_the_filters_on(self) -> None:
        fake = FakeNats(self.log(5))
        client = client_for(fake)
        seen = [e["position"] async for e in client.iter_events(3, flow_id="F", types=["X"])]
        assert seen == [4, 5]
        assert fake.sent[0].body == {"after": 3, "limit": 1000, "flow_id": "F", "types": ["X"]}

    async def test_an_error_page_raises(self) -> None:
        fake = FakeNats(lambda s, b: answer(422, {"detail": "Invalid limit"}))
        with pytest.raises(RequestFailed) as caught:
            _ = [e async for e in client_for(fake).iter_events()]
        assert caught.value.reply.status == 422


class TestSessionConsistency:
    """The client remembers the highest Flows-Position it was given and waits for it on every
    query, so a session reads its own writes whichever instance answers."""

    async def test_queries_after_a_command_carry_its_position(self) -> None:
        positions = iter(["7", "12", "9"])

        def respond(subject: str, body: Any) -> FakeMsg:
            if subject.startswith("flows.cmd."):
                return answer(201, {"id": "F"}, **{"Flows-Position": next(positions)})
            return answer(200, 0)

        fake = FakeNats(respond)
        client = client_for(fake)
        await client.count()  # nothing written yet: no header
        await client.create("a")
        await client.create("b")
        await client.create("c")  # position 9: the session's position stays 12
        await client.read("F")
        await client.filter(flows={"name": {"any_": ["a"]}})
        await client.paginate(limit=1, min_position=3)
        await client.read_by_name("a", min_position=20)
        sent = [message.headers for message in fake.sent]
        assert sent[0] is None
        assert [h.get("Flows-Min-Position") for h in sent[4:] if h] == ["12", "12", "12", "20"]
        assert client.position == 12

    async def test_as_of_queries_and_a_client_without_sessions_send_no_position(self) -> None:
        def respond(subject: str, body: Any) -> FakeMsg:
            return answer(201, {}, **{"Flows-Position": "5"})

        fake = FakeNats(respond)
        client = client_for(fake)
        await client.create("a")
        await client.count(as_of=3)
        assert fake.sent[1].headers == {"Flows-As-Of": "3"}
        plain = FlowsClient(fake, "flows", session_consistency=False)  # type: ignore[arg-type]
        await plain.create("b")
        await plain.count()
        assert fake.sent[-1].headers is None


class TestTypedErrors:
    @pytest.mark.parametrize(
        ("status", "body", "kind"),
        [
            (404, {"detail": "Flow not found"}, "FlowNotFound"),
            (
                422,
                {
                    "exception_message": "Invalid request received.",
                    "exception_detail": [{"loc": ["body", "name"], "type": "missing"}],
                    "request_body": {},
                },
                "ValidationError",
            ),
            (
                422,
                {"detail": "Invalid limit: must be less than or equal to 200."},
                "ValidationError",
            ),
            (409, {"detail": "conflict"}, "Conflict"),
            (503, {"detail": "read model behind"}, "ServiceUnavailable"),
            (500, {"detail": "internal"}, "RequestFailed"),
        ],
    )
    async def test_each_status_raises_its_exception(
        self, status: int, body: Any, kind: str
    ) -> None:
        import services.client as client_module

        fake = FakeNats(lambda subject, sent: answer(status, body))
        reply = await client_for(fake).read("F")
        with pytest.raises(getattr(client_module, kind)) as caught:
            reply.raise_for_status("flows.query.read")
        assert type(caught.value).__name__ == kind
        assert isinstance(caught.value, RequestFailed)
        assert caught.value.status == status
        if kind == "ValidationError" and "exception_detail" in body:
            assert caught.value.errors == body["exception_detail"]  # type: ignore[attr-defined]
        if "detail" in body:
            assert caught.value.detail == body["detail"]

    async def test_a_client_may_raise_them_by_itself(self) -> None:
        from services.client import FlowNotFound

        fake = FakeNats(lambda subject, sent: answer(404, {"detail": "Flow not found"}))
        client = FlowsClient(fake, "flows", raise_errors=True)  # type: ignore[arg-type]
        with pytest.raises(FlowNotFound, match=r"flows\.query\.read answered 404: Flow not found"):
            await client.read("F")
