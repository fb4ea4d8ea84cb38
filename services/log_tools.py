"""`flows replay` and `flows rebuild`: tools that read the log directly, without the service.

Both draw a progress bar on stderr when it is a terminal (services/progress.py); stdout carries
only replay's JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from events import jsoncodec
from events.contract.errors import LogUnavailable
from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog
from events.log import StoredMessage
from events.model import EVENT_TYPES
from projections.log_points import LogPoint, parse_log_point, position_at
from projections.rebuild import rebuild_online
from services.audit_reader import recorded_json
from services.bootstrap import read_model, tool_log
from services.progress import LogProgress
from services.settings import Settings, redact_url

__all__ = ["ReplayFilter", "parse_replay_filter", "rebuild", "replay"]

log = logging.getLogger(__name__)

_PAGE = 1000
# How long an interrupted `replay --follow` gives its subscription to close before it returns.
_STOP_S = 2.0


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which events `flows replay` prints: a range of positions or times (both ends
    inclusive), one flow, some event types. The default is the whole log."""

    start: LogPoint | None = None
    end: LogPoint | None = None
    flow_id: str | None = None
    types: frozenset[str] | None = None
    # Keep printing events as they are appended, like `tail -f` (no end).
    follow: bool = False


def parse_replay_filter(
    start: str | None,
    end: str | None,
    flow_id: str | None,
    types: Sequence[str] | None,
    follow: bool = False,
) -> ReplayFilter:
    """The filter from the command line's text; ValueError says what is wrong, for people."""
    if follow and end is not None:
        raise ValueError("--follow never ends: leave out --to, or --follow")
    if flow_id is not None:
        try:
            flow_id = str(uuid.UUID(flow_id))
        except ValueError:
            raise ValueError(f"--flow: expected a flow id (a UUID), got {flow_id!r}") from None
    unknown = sorted(set(types or ()) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(
            f"--type: unknown event type {unknown[0]!r}; one of {', '.join(EVENT_TYPES)}"
        )
    try:
        first = None if start is None else parse_log_point(start)
    except ValueError as exc:
        raise ValueError(f"--from: {exc}") from None
    try:
        last = None if end is None else parse_log_point(end)
    except ValueError as exc:
        raise ValueError(f"--to: {exc}") from None
    return ReplayFilter(first, last, flow_id, frozenset(types) if types else None, follow)


def _unreachable(tool: str, settings: Settings, exc: BaseException, err: TextIO) -> int:
    err.write(
        f"flows {tool}: cannot read the event log (stream {settings.stream} at "
        f"{redact_url(settings.nats_url)}): {exc or type(exc).__name__}\n"
        "check --nats-url/FLOWS_NATS_URL and --stream/FLOWS_STREAM\n"
    )
    return 3


async def replay(
    settings: Settings,
    out: TextIO,
    err: TextIO = sys.stderr,
    *,
    start: str | None = None,
    end: str | None = None,
    flow: str | None = None,
    types: Sequence[str] | None = None,
    follow: bool = False,
) -> int:
    """The selected events on `out`, one RecordedEvent as JSON per line, in log order: from
    `start` to `end` (positions or ISO 8601 times, both inclusive), of one `flow`, of `types`;
    with `follow`, then every new one as it is appended, until interrupted."""
    try:
        selection = parse_replay_filter(start, end, flow, types, follow)
    except ValueError as exc:
        err.write(f"flows replay: {exc}\n")
        return 1
    try:
        return await _replay(settings, out, err, selection)
    except (LogUnavailable, OSError) as exc:
        return _unreachable("replay", settings, exc, err)


async def _replay(settings: Settings, out: TextIO, err: TextIO, selection: ReplayFilter) -> int:
    async with tool_log(settings, "flows-replay") as event_log:
        subjects = event_log.subjects
        after, last = await _range(event_log, selection)
        subject = subjects.event(selection.flow_id) if selection.flow_id else subjects.all_events
        with LogProgress("replay", first=after + 1, last=last, stream=err) as bar:
            pages = event_log.pages(after, until=last, max_batch=_PAGE, subject_filter=subject)
            async with contextlib.aclosing(pages):
                async for page in pages:
                    for message in page:
                        _print_selected(message, selection, out)
                    bar.reached(page[-1].position)
            bar.reached(last)
        out.flush()
        if selection.follow:
            return await _follow(event_log, subjects, last, selection, out)
    return 0


async def _follow(
    event_log: JetStreamLog,
    subjects: Subjects,
    after: int,
    selection: ReplayFilter,
    out: TextIO,
) -> int:
    """Every event appended after `after`, as it comes, until SIGINT (Ctrl-C) or SIGTERM: then
    the shell's code for it (130, 143), at once.

    The signals are handled here rather than left to asyncio.run's cancellation of the whole
    program: nats-py swallows a cancellation that meets it in a flush (`_flush_pending`), and
    its connection's close can wait on the server, so a cancelled follower could stay running.
    Instead a signal sets an event; the follower stops, its subscription and connection get a
    bounded moment to close, and the command returns."""
    interrupted = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        received.append(signum)
        interrupted.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    stop = asyncio.ensure_future(interrupted.wait())
    batches = event_log.follow(after)
    arriving: asyncio.Future[list[StoredMessage]] | None = None
    try:
        while True:
            arriving = asyncio.ensure_future(anext(batches))
            await asyncio.wait({arriving, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not arriving.done():  # interrupted while waiting for the next batch
                arriving.cancel()
                await asyncio.wait({arriving}, timeout=_STOP_S)
                return 128 + received[0]
            for message in arriving.result():
                flow_id = subjects.flow_id_of(message.subject)
                if flow_id is None or (selection.flow_id and flow_id != selection.flow_id):
                    continue  # name claims and stored replies, or another flow's events
                _print_selected(message, selection, out)
            out.flush()
            if stop.done():
                return 128 + received[0]
    finally:
        stop.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if arriving is None or arriving.done():  # between batches: unsubscribe, boundedly
            await asyncio.wait({asyncio.ensure_future(batches.aclose())}, timeout=_STOP_S)


def _print_selected(message: StoredMessage, selection: ReplayFilter, out: TextIO) -> None:
    recorded = recorded_json(message)
    if selection.types is None or recorded.get("type") in selection.types:
        out.write(jsoncodec.dumps(recorded).decode() + "\n")


async def _range(event_log: JetStreamLog, selection: ReplayFilter) -> tuple[int, int]:
    """(read after this position, up to and including this one)."""
    end = await event_log.last_position()
    after = 0
    if isinstance(selection.start, int):
        after = max(selection.start - 1, 0)
    elif selection.start is not None:  # the first message stored at or after that time
        after = await position_at(event_log, selection.start, inclusive=False)
    last = end
    if isinstance(selection.end, int):
        last = min(selection.end, end)
    elif selection.end is not None:
        last = await position_at(event_log, selection.end)
    return after, last


async def rebuild(settings: Settings, err: TextIO = sys.stderr) -> int:
    """Rebuild the read model from the log while the service keeps answering from it
    (projections/rebuild.py): the new model is swapped in whole, or not at all."""
    try:
        return await _rebuild(settings, err)
    except (LogUnavailable, OSError) as exc:
        return _unreachable("rebuild", settings, exc, err)


async def _rebuild(settings: Settings, err: TextIO) -> int:
    async with tool_log(settings, "flows-rebuild") as event_log, read_model(settings) as engine:
        with LogProgress("rebuild", first=1, last=0, stream=err) as bar:
            report = await rebuild_online(
                engine, event_log, event_log.subjects, progress=bar.reached
            )
    err.write(
        f"rebuilt the read model from {report.messages} log messages, {report.events} of them "
        f"events (up to position {report.position}) in {report.elapsed_s:.2f}s "
        f"({report.event_rate:.0f} events/s, {report.rate:.0f} messages/s); "
        f"the swap held the live projector for {report.swap_s * 1000:.0f} ms\n"
    )
    return 0
