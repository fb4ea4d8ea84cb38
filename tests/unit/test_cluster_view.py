"""The start-up's account of a JetStream that is not ready (services/jetstream_readiness.py):
from what the connected server's INFO says, a line a person can act on (no sockets)."""

from __future__ import annotations

import pytest

from services.jetstream_readiness import ClusterView

FORMING = ClusterView(server="n0", cluster="c1", seen=2)
ERROR = "the event log did not answer"


def test_too_few_servers_for_the_replicas_says_how_many_are_seen() -> None:
    said = FORMING.explain(10005, 3, ERROR)
    assert said.startswith(
        "no suitable peers yet for 3 replicas (2 of 3 servers seen, in cluster c1, connected to n0)"
    )
    assert "start the cluster's other servers, or set FLOWS_STREAM_REPLICAS" in said


def test_enough_servers_but_no_placement_yet_says_they_are_joining() -> None:
    said = ClusterView(server="n0", cluster="c1", seen=3).explain(10005, 3, ERROR)
    assert "(3 servers seen, in cluster c1" in said
    assert "just joined" in said


@pytest.mark.parametrize(
    ("code", "start"),
    [(10008, "JetStream has no leader yet"), (None, "JetStream does not answer yet")],
)
def test_a_cluster_without_a_leader_says_it_needs_a_majority(code: int | None, start: str) -> None:
    said = ClusterView(server="n0", cluster="c1", seen=1).explain(code, 3, ERROR)
    assert said.startswith(f"{start} (1 of 3 servers seen, in cluster c1, connected to n0)")
    assert "majority" in said


def test_a_lone_server_that_does_not_answer_keeps_the_logs_own_reason() -> None:
    said = ClusterView(server="n0").explain(None, 1, ERROR)
    assert said == f"{ERROR} (server n0 is not in a cluster)"
    assert ClusterView().explain(None, 1, ERROR) == f"{ERROR} (the server's INFO could not be read)"
