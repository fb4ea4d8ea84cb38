"""The log connection's header parsing gives exactly nats-py's answer, faster."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from services.nats_headers import FastHeadersClient, parse_header_lines

# What makes header parsing interesting: separators, every kind of whitespace str.isspace
# knows in ASCII and beyond, non-ASCII and invalid UTF-8.
_PIECES = [
    b"\r\n",
    b"\r",
    b"\n",
    b":",
    b": ",
    b" ",
    b"\t",
    b"\x0b",
    b"\x0c",
    b"\x1c",
    b"\x1f",
    b"\x85",
    b"\xc2\x85",
    b"\xc2\xa0",
    b"\xe2\x80\x83",
    b"\xff",
    b"\xe2\x82",
    b"\xc3\xa9",
    b"Nats-Sequence",
    b"Status",
    b"a",
    b"-",
    b"1",
    b"\x00",
]
_blocks = st.lists(st.sampled_from(_PIECES) | st.binary(max_size=4), max_size=30).map(b"".join)


@settings(max_examples=3000, deadline=None)
@given(_blocks)
def test_parses_every_block_as_nats_py_does(raw: bytes) -> None:
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)


def test_a_jetstream_answer_is_parsed_whole() -> None:
    raw = (
        b"Nats-Batch-Id: c254eb\r\nNats-Batch-Sequence: 1\r\nNats-Stream: T\r\n"
        b"Nats-Subject: flows.events.f1\r\nNats-Sequence: 1\r\n"
        b"Nats-Time-Stamp: 2026-12-03T06:43:28.791846269Z\r\n\r\n"
    )
    assert parse_header_lines(raw) == {
        "Nats-Batch-Id": "c254eb",
        "Nats-Batch-Sequence": "1",
        "Nats-Stream": "T",
        "Nats-Subject": "flows.events.f1",
        "Nats-Sequence": "1",
        "Nats-Time-Stamp": "2026-12-03T06:43:28.791846269Z",
    }


async def test_the_client_parses_headers_with_it() -> None:
    """nats-py's `_process_headers` calls `_parse_header_lines`; if a new nats-py stops doing
    so, this fails (the override would do nothing; headers would still be right, slower)."""
    assert "_parse_header_lines" in vars(Client)
    calls: list[bytes] = []

    class Counting(FastHeadersClient):
        @staticmethod
        def _parse_header_lines(raw: bytes) -> dict[str, str]:
            calls.append(raw)
            return parse_header_lines(raw)

    headers = await Counting()._process_headers(b"NATS/1.0\r\nNats-Sequence: 7\r\n\r\n")
    assert headers == {"Nats-Sequence": "7"}
    assert calls
