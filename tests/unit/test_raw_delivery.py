"""Reading a header block the way nats-py does, without building its dict (events/raw_delivery.py)."""

from __future__ import annotations

import inspect

import pytest
from nats.aio.client import Client

from events.raw_delivery import RawSubscriptions, header_value, status_of
from services.nats_headers import FastHeadersClient

# What nats-server sends: a direct get's answer, the batch's end, a miss.
_STORED = (
    b"NATS/1.0\r\nNats-Msg-Id: x\r\nNats-Stream: S\r\nNats-Subject: flows.events.a\r\n"
    b"Nats-Sequence: 42\r\nNats-Time-Stamp: 2026-12-03T09:25:33.315108103Z\r\n\r\n"
)
_END = b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 0\r\nNats-Last-Sequence: 42\r\n\r\n"
_MISS = b"NATS/1.0 404 Message Not Found\r\n\r\n"


@pytest.mark.parametrize(
    ("block", "expected"),
    [(_STORED, (b"", b"")), (_END, (b"204", b"EOB")), (_MISS, (b"404", b"Message Not Found"))],
)
def test_the_status_is_the_first_lines_code_and_description(
    block: bytes, expected: tuple[bytes, bytes]
) -> None:
    assert status_of(block) == expected


async def test_header_values_are_what_nats_py_reads() -> None:
    parsed = await Client()._process_headers(_STORED)
    assert parsed is not None
    for name in ("Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Msg-Id"):
        assert header_value(_STORED, f"\r\n{name}:".encode()) == parsed[name].encode()
    assert header_value(_STORED, b"\r\nNats-Missing:") is None


async def test_a_repeated_header_reads_as_its_last_line_as_in_nats_pys_dict() -> None:
    """A stored message may carry a header the server adds again to a direct get's answer
    (the server's comes last): both readers must take the same one."""
    block = b"NATS/1.0\r\nNats-Sequence: 1\r\nNats-Sequence:  7 \r\n\r\n"
    parsed = await Client()._process_headers(block)
    assert parsed is not None
    assert header_value(block, b"\r\nNats-Sequence:") == parsed["Nats-Sequence"].encode() == b"7"


def test_the_nats_py_methods_raw_subscriptions_override_still_exist() -> None:
    """Were nats-py to rename them, raw subscriptions would receive nothing: fail here first."""
    for name in ("_process_msg", "_remove_sub"):
        ours = inspect.signature(getattr(RawSubscriptions, name))
        theirs = inspect.signature(getattr(Client, name))
        assert list(ours.parameters) == list(theirs.parameters), name
    assert "headers" in inspect.signature(Client._process_msg).parameters


def test_the_service_connection_has_raw_subscriptions() -> None:
    assert issubclass(FastHeadersClient, RawSubscriptions)
