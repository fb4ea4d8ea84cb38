"""Pure rules and the position watcher."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from events.contract.errors import FlowNotFound, MalformedEvent
from events.model import Event, RecordedEvent, decode_event, encode_event
from events.rules import decide_create, decide_delete, decide_update, evolve
from events.timefmt import format_datetime, parse_datetime
from projections.position_watcher import PositionWatcher

NOW = datetime(2026, 11, 29, 18, 38, 3, 441494, tzinfo=UTC)
FLOW = "16f3851d-39da-4c5a-9d99-c10251805eb4"


def recorded(event: Event, position: int) -> RecordedEvent:
    return decode_event(encode_event(event), position)


class TestTimestamps:
    def test_prefect_format(self) -> None:
        assert format_datetime(NOW) == "2026-11-29T18:38:03.441494Z"
        assert format_datetime(NOW.replace(microsecond=0)) == "2026-11-29T18:38:03Z"
        assert format_datetime(NOW.replace(microsecond=465000)) == "2026-11-29T18:38:03.465000Z"
        assert parse_datetime("2026-11-29T18:38:03.441494Z") == NOW


class TestRules:
    def test_create_then_updates_then_delete(self) -> None:
        created = decide_create(
            name="f", tags=["a"], labels=None, flow_id=FLOW, event_id="e1", now=NOW, command_id="c"
        )
        state = evolve(None, recorded(created, 1))
        assert state is not None and (state.name, state.tags, state.labels) == ("f", ["a"], None)
        later = NOW.replace(second=5)
        empty = decide_update(
            current="FlowCreated", flow_id=FLOW, tags=None, event_id="e2", now=later, command_id="c"
        )
        state = evolve(state, recorded(empty, 2))
        assert state is not None and (state.tags, state.updated, state.version) == (["a"], later, 2)
        cleared = decide_update(
            current="FlowUpdated", flow_id=FLOW, tags=[], event_id="e3", now=later, command_id="c"
        )
        state = evolve(state, recorded(cleared, 3))
        assert state is not None and state.tags == []
        gone = decide_delete(
            current="FlowUpdated", flow_id=FLOW, name="f", event_id="e4", now=later, command_id="c"
        )
        state = evolve(state, recorded(gone, 4))
        assert state is not None and state.deleted
        assert state.document()["created"] == "2026-11-29T18:38:03.441494Z"

    @pytest.mark.parametrize("current", [None, "FlowDeleted"])
    def test_update_and_delete_need_a_live_flow(self, current: str | None) -> None:
        with pytest.raises(FlowNotFound):
            decide_update(
                current=current,
                flow_id=FLOW,
                tags=None,
                event_id="e",
                now=NOW,
                command_id="c",  # type: ignore[arg-type]
            )
        with pytest.raises(FlowNotFound):
            decide_delete(
                current=current,
                flow_id=FLOW,
                name="f",
                event_id="e",
                now=NOW,
                command_id="c",  # type: ignore[arg-type]
            )


class TestDecode:
    @pytest.mark.parametrize(
        ("payload", "reason"),
        [
            (b"{", "not JSON"),
            (b"[]", "not a JSON object"),
            (b'{"type": "FlowRenamed"}', "unknown event type"),
            (
                b'{"id":"e","type":"FlowCreated","flow_id":"nope","occurred":"2026-01-01T00:00:00Z","data":{}}',
                "badly formed",
            ),
            (
                b'{"id":"e","type":"FlowCreated","flow_id":"'
                + FLOW.encode()
                + b'","occurred":"2026-01-01T00:00:00Z","data":{"name":1,"tags":[]}}',
                "without a string name",
            ),
        ],
    )
    def test_malformed_events_name_their_position_and_reason(
        self, payload: bytes, reason: str
    ) -> None:
        with pytest.raises(MalformedEvent) as caught:
            decode_event(payload, 42)
        assert caught.value.position == 42
        assert reason in caught.value.reason


class TestPositionWatcher:
    async def test_waiters_wake_in_any_order_once_their_position_is_applied(self) -> None:
        watcher = PositionWatcher()
        waits = [asyncio.create_task(watcher.wait_for(p, 5)) for p in (3, 1, 2)]
        await asyncio.sleep(0)
        watcher.advance(2)
        done, pending = await asyncio.wait(waits, timeout=1)
        assert {waits.index(t) for t in done} == {1, 2}
        watcher.advance(3)
        assert await waits[0]
        assert pending == {waits[0]}

    async def test_a_wait_that_runs_out_says_so(self) -> None:
        watcher = PositionWatcher(5)
        assert await watcher.wait_for(5, 0)
        assert not await watcher.wait_for(6, 0.01)
        watcher.advance(4)  # never goes back
        assert watcher.position == 5
