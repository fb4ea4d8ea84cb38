"""How the log reads JetStream's acknowledgement of an append: a failed guard is a lost race
(WrongExpectedPosition, which the writer answers as Prefect would), anything else is the log's
failure. Issue 13: a replicated stream's leader reports the failed guard as code 10164."""

from __future__ import annotations

import nats.errors
import orjson
import pytest
from nats.aio.msg import Msg

from events import jetstream_log as jetstream
from events.contract.errors import LogUnavailable
from events.contract.subjects import Subjects
from events.log import WrongExpectedPosition

SUBJECTS = Subjects("u")


def _ack(body: dict[str, object]) -> Msg:
    return Msg(_client=None, subject="_INBOX.x", data=orjson.dumps(body))  # type: ignore[arg-type]


def test_a_stored_append_gives_its_position() -> None:
    assert jetstream._position_from_ack(_ack({"stream": "S", "seq": 42}), "S") == 42


@pytest.mark.parametrize(
    ("code", "description"),
    [(10071, "wrong last sequence: 7"), (10164, "wrong last sequence")],
    ids=["single-server", "replicated-stream"],
)
def test_a_failed_guard_is_a_lost_race_on_every_stream(code: int, description: str) -> None:
    reply = _ack({"error": {"code": 400, "err_code": code, "description": description}})
    with pytest.raises(WrongExpectedPosition):
        jetstream._position_from_ack(reply, "S")


def test_any_other_refusal_is_the_logs_failure_and_names_the_code() -> None:
    reply = _ack({"error": {"code": 503, "err_code": 10008, "description": "no quorum"}})
    with pytest.raises(LogUnavailable, match=r"no quorum \(code 10008\)"):
        jetstream._position_from_ack(reply, "S")


class _StreamInfoAnswers:
    """A connection whose STREAM.INFO answers come from a list, one per request."""

    def __init__(self, *bodies: dict[str, object]) -> None:
        self.bodies = list(bodies)
        self.requests = 0

    async def request(self, subject: str, data: bytes, **_: object) -> Msg:
        assert subject == "$JS.API.STREAM.INFO.S"
        self.requests += 1
        return _ack(self.bodies[min(self.requests, len(self.bodies)) - 1])


def _info(last_seq: int, leader: str | None) -> dict[str, object]:
    cluster: dict[str, object] = {"name": "c", "replicas": [{"name": "n1"}, {"name": "n2"}]}
    if leader:
        cluster["leader"] = leader
    return {"state": {"last_seq": last_seq}, "cluster": cluster}


async def test_the_log_end_is_the_leaders_not_a_leaderless_replicas() -> None:
    """A replica that thinks the stream leaderless answers STREAM.INFO with its own state and
    no leader (nats-server's jsStreamInfoRequest): asked again, the leader answers."""
    nc = _StreamInfoAnswers(_info(911, None), _info(916, "n0"))
    log = jetstream.JetStreamLog(nc, SUBJECTS, "S", timeout_s=5)  # type: ignore[arg-type]
    assert await log.last_position() == 916
    assert nc.requests == 2


async def test_no_leader_until_the_timeout_is_the_logs_failure() -> None:
    nc = _StreamInfoAnswers(_info(911, None))
    log = jetstream.JetStreamLog(nc, SUBJECTS, "S", timeout_s=0.2)  # type: ignore[arg-type]
    with pytest.raises(LogUnavailable, match="no leader"):
        await log.last_position()


async def test_a_stream_outside_a_cluster_names_its_server_as_leader() -> None:
    nc = _StreamInfoAnswers({"state": {"last_seq": 3}, "cluster": {"leader": "solo"}})
    log = jetstream.JetStreamLog(nc, SUBJECTS, "S")  # type: ignore[arg-type]
    assert await log.last_position() == 3


async def test_a_leader_question_nobody_answered_is_asked_again_soon() -> None:
    """While the replicas elect a leader nobody answers STREAM.MSG.GET (the others stay
    silent): the writer's read is asked again, each attempt waiting at most a second."""
    waits: list[float] = []

    class Electing:
        async def request(self, subject: str, data: bytes, timeout: float, **_: object) -> Msg:
            assert subject == "$JS.API.STREAM.MSG.GET.S"
            waits.append(timeout)
            if len(waits) < 4:
                raise nats.errors.TimeoutError
            message = {"subject": "u.events.a", "seq": 9, "data": ""}
            return _ack({"message": message})

    log = jetstream.JetStreamLog(Electing(), SUBJECTS, "S", timeout_s=5)  # type: ignore[arg-type]
    found = await log.last("u.events.a")
    assert found is not None and found.position == 9
    assert waits == [0.5, 1.0, 1.0, 1.0]
