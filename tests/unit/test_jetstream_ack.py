"""How the log reads JetStream's acknowledgement of an append: a failed guard is a lost race
(WrongExpectedPosition, which the writer answers as Prefect would), anything else is the log's
failure. Issue 13: a replicated stream's leader reports the failed guard as code 10164."""

from __future__ import annotations

import orjson
import pytest
from nats.aio.msg import Msg

from events import jetstream_log as jetstream
from events.contract.errors import LogUnavailable
from events.log import WrongExpectedPosition


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
