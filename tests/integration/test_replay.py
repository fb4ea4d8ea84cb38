"""`flows replay` for people and tools: ranges by position or time, one flow, event types; JSON
lines on stdout; a progress bar on stderr only when stderr is a terminal (replay and rebuild)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient

from services.client import FlowsClient
from services.log_tools import rebuild, replay
from services.settings import Settings
from tests import backends
from tests.processes import Target, run_flows

pytestmark = backends.only(backends.SQLITE)


class Terminal(io.StringIO):
    """Captured stderr that says it is a terminal, as an interactive shell's is."""

    def isatty(self) -> bool:
        return True


@dataclass
class History:
    events: list[dict[str, Any]]  # the whole log, as audit reads it
    moments: list[datetime]  # one after each command's reply
    first: str
    second: str


@pytest.fixture
async def history(service: Settings, nc: NatsClient) -> History:
    client = FlowsClient(nc, service.subject_prefix)
    moments: list[datetime] = []

    async def command(reply: Any) -> Any:
        moments.append(datetime.now(UTC))
        return reply.raise_for_status()

    first = (await command(await client.create("first", tags=["a"]))).body["id"]
    second = (await command(await client.create("second"))).body["id"]
    await command(await client.update(first, tags=["b"]))
    await command(await client.update(second))
    await command(await client.delete(first))
    await command(await client.create("third"))
    events = [event async for event in client.iter_events()]
    assert len(events) == 6
    return History(events, moments, first, second)


async def replayed(settings: Settings, **selection: Any) -> tuple[int, list[Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = await replay(settings, out, err, **selection)
    return code, [orjson.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


async def test_without_filters_replay_prints_the_whole_log_and_nothing_on_stderr(
    service: Settings, history: History
) -> None:
    code, lines, err = await replayed(service)
    assert code == 0
    assert lines == history.events
    assert err == ""  # not a terminal: no progress bar, no control characters


async def test_a_position_range_is_inclusive_at_both_ends(
    service: Settings, history: History
) -> None:
    positions = [event["position"] for event in history.events]
    _, lines, _ = await replayed(service, start=str(positions[1]), end=str(positions[3]))
    assert lines == history.events[1:4]
    _, lines, _ = await replayed(service, start=str(positions[4]))
    assert lines == history.events[4:]
    _, lines, _ = await replayed(service, end=str(positions[0]))
    assert lines == history.events[:1]
    _, lines, _ = await replayed(service, start=str(positions[-1] + 1))
    assert lines == []


async def test_a_time_range_selects_what_was_stored_between_the_moments(
    service: Settings, history: History
) -> None:
    def iso(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    # moments[i] falls after command i and before command i + 1.
    _, lines, _ = await replayed(
        service, start=iso(history.moments[0]), end=iso(history.moments[3])
    )
    assert lines == history.events[1:4]
    _, lines, _ = await replayed(service, end=iso(history.moments[0] - timedelta(days=1)))
    assert lines == []
    _, lines, _ = await replayed(service, start=iso(history.moments[4]))
    assert lines == history.events[5:]


async def test_flow_and_type_filters_combine(service: Settings, history: History) -> None:
    _, lines, _ = await replayed(service, flow=history.first)
    assert lines == [e for e in history.events if e["flow_id"] == history.first]
    assert [e["type"] for e in lines] == ["FlowCreated", "FlowUpdated", "FlowDeleted"]

    _, lines, _ = await replayed(service, types=["FlowUpdated", "FlowDeleted"])
    assert lines == [e for e in history.events if e["type"] != "FlowCreated"]

    upper = history.second.upper().replace("-", "")  # any UUID spelling names the flow
    _, lines, _ = await replayed(service, flow=upper, types=["FlowUpdated"])
    assert lines == [history.events[3]]


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"types": ["FlowRenamed"]}, "--type: unknown event type 'FlowRenamed'"),
        ({"start": "soon"}, "--from: expected a log position"),
        ({"end": "-3"}, "--to: a log position is >= 0"),
        ({"flow": "not-a-uuid"}, "--flow: expected a flow id"),
    ],
)
async def test_bad_filters_exit_1_and_say_what_is_wrong(
    service: Settings, selection: dict[str, Any], message: str
) -> None:
    code, lines, err = await replayed(service, **selection)
    assert (code, lines) == (1, [])
    assert message in err


async def test_on_a_terminal_replay_and_rebuild_draw_a_progress_bar_on_stderr(
    service: Settings, history: History, tmp_path: Path
) -> None:
    out, err = io.StringIO(), Terminal()
    assert await replay(service, out, err) == 0
    assert [orjson.loads(line) for line in out.getvalue().splitlines()] == history.events
    assert "replay" in err.getvalue() and "100%" in err.getvalue()

    fresh = Settings(
        nats_url=service.nats_url,
        subject_prefix=service.subject_prefix,
        stream=service.stream,
        data_dir=tmp_path / "rebuilt",
    )
    err = Terminal()
    assert await rebuild(fresh, err) == 0
    assert "rebuild" in err.getvalue() and "100%" in err.getvalue()
    assert "rebuilt the read model from" in err.getvalue()


async def test_the_cli_replays_with_filters_as_json_lines(
    service: Settings, history: History, tmp_path: Path
) -> None:
    target = Target(service.nats_url, service.subject_prefix, service.stream, tmp_path / "cli")
    position = str(history.events[2]["position"])
    result = await run_flows(
        target, "replay", "--from", position, "--type", "FlowUpdated", "--type", "FlowCreated"
    )
    assert result.returncode == 0, str(result)
    assert result.json_lines() == [history.events[2], history.events[3], history.events[5]]
    assert result.stderr == "", str(result)  # a pipe, not a terminal: no bar
