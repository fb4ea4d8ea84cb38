"""free_port picks ports an outgoing connection cannot take before the server binds them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services import embedded
from services.embedded import free_port

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE_FILE.exists(), reason="the ephemeral range is Linux's /proc file")
def test_ports_are_below_the_ephemeral_range() -> None:
    ephemeral_start = int(RANGE_FILE.read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(port < ephemeral_start for port in ports), ports


def test_ports_are_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_a_port_something_listens_on_is_not_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        busy = listening.getsockname()[1]
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            free = spare.getsockname()[1]
        picks = iter([busy, free])
        monkeypatch.setattr(embedded, "_ephemeral_range_start", lambda: 65536)
        monkeypatch.setattr(embedded.random, "randrange", lambda _low, _high: next(picks))
        assert free_port() == free
