"""A NATS client whose header parsing costs a third of nats-py's.

Every message read from the log carries nine headers (JetStream's subject, sequence and time,
and the atomic batch's own), and nats-py parses each with a generator over every character of
every name: ~12 µs a message, a quarter of the log connection's CPU while a rebuild reads
(py-spy). `parse_header_lines` gives the same dict as nats-py's `_parse_header_lines` for every
input (tests/unit/test_nats_headers.py checks it against nats-py's own on generated blocks) in
~5 µs.

It overrides a private method: were nats-py to rename it, the override would do nothing and
headers would be parsed nats-py's way, correctly, just slower (a test says so first)."""

from __future__ import annotations

import re

from events.raw_delivery import RawSubscriptions

__all__ = ["FastHeadersClient", "parse_header_lines"]

# The same characters as str.isspace, in C: a name holding one is not a header name.
_has_space = re.compile(r"\s").search


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """`Name: Value` lines separated by CRLF, as nats-py reads them: lines without a colon
    and names that are not ASCII or hold whitespace are skipped; values are decoded as UTF-8
    with U+FFFD for what is not."""
    headers: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name.isascii():
            continue
        key = name.strip().decode("ascii")
        if _has_space(key) is None:
            headers[key] = value.strip().decode("utf-8", "replace")
    return headers


class FastHeadersClient(RawSubscriptions):
    """nats-py's client, parsing headers with `parse_header_lines`, with raw subscriptions
    (events/raw_delivery.py) for the log's reads."""

    _parse_header_lines = staticmethod(parse_header_lines)
