"""`flows verify`: replay the whole log into a scratch read model, compare it with the live one
row by row (and the live kept counts with a recount of the replay), and walk the log for
missing sequences, broken flow histories, broken chain links and malformed events. Exit 0
only when all holds; 1 with a report naming each problem's event; 3 when the log or the read
model cannot be reached.

The live projector may be moving while this runs, so the live model is read in one transaction
(its rows and its checkpoint at one moment) and the scratch model is replayed to exactly that
checkpoint. The log walk covers the whole stream, up to its last sequence when verify started.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from events.contract.errors import LogUnavailable
from events.contract.subjects import Subjects
from events.jetstream_log import JetStreamLog
from events.log import StoredMessage
from projections.dialect import dialect_of
from projections.projector import apply_batch
from projections.scratch import scratch_model
from projections.store import read_checkpoint
from projections.tables import checkpoint
from projections.verify.count_check import compare_counts
from projections.verify.log_walk import LogAudit
from projections.verify.model_diff import ModelRows, compare_models, read_model_rows
from projections.verify.report import Finding, VerifyReport, render_report
from services.bootstrap import read_model, tool_log
from services.progress import LogProgress
from services.settings import Settings, redact_url

__all__ = ["run_verify", "verify"]

_PAGE = 1000
# Bigger transactions than the live projector's: fewer statements for the same events.
_REPLAY_BATCH = 10_000
_NO_MODEL = (
    "start `flows serve` (it creates and fills the read model) or run `flows rebuild`; check "
    "--database-url/FLOWS_DATABASE_URL and --data-dir/FLOWS_DATA_DIR name the service's model"
)


async def verify(settings: Settings, out: TextIO, err: TextIO = sys.stderr) -> int:
    """The `flows verify` subcommand: the report on `out`, the exit code returned."""
    try:
        report = await run_verify(settings, err)
    except (LogUnavailable, OSError, SQLAlchemyError) as exc:
        err.write(
            f"flows verify: cannot read the event log (stream {settings.stream} at "
            f"{redact_url(settings.nats_url)}) or the read model: {exc or type(exc).__name__}\n"
            "check --nats-url/FLOWS_NATS_URL, --stream/FLOWS_STREAM and "
            "--database-url/FLOWS_DATABASE_URL\n"
        )
        return 3
    out.write(render_report(report) + "\n")
    out.flush()
    return 0 if report.ok else 1


async def run_verify(settings: Settings, progress_to: TextIO | None = None) -> VerifyReport:
    """Verify the log and the live read model named by `settings`; the report, not printed."""
    started = time.perf_counter()
    report = VerifyReport(stream=settings.stream)
    async with tool_log(settings, "flows-verify") as event_log:
        subjects = event_log.subjects
        live = await _read_live_model(settings, report)
        report.last_position = await event_log.last_position()
        report.checkpoint = live[0] if live else 0
        audit = LogAudit(subjects, settings.stream)
        with tempfile.TemporaryDirectory(prefix="flows-verify-") as scratch_dir:
            async with scratch_model(Path(scratch_dir) / "replay.db") as scratch:
                with LogProgress(
                    "verify", first=1, last=report.last_position, stream=progress_to or sys.stderr
                ) as bar:
                    await _walk(event_log, audit, scratch, subjects, report, bar)
                async with scratch.connect() as conn:
                    replayed = await read_model_rows(conn)
    report.notes.extend(audit.finish(report.last_position))
    report.findings[:0] = audit.findings
    report.messages, report.events, report.flows = audit.messages, audit.events, audit.flows
    if live is not None:
        _compare(live, replayed, report)
    report.elapsed_s = time.perf_counter() - started
    return report


async def _read_live_model(
    settings: Settings, report: VerifyReport
) -> tuple[int, ModelRows] | None:
    """The live model's checkpoint and rows, read at one moment; None (and a finding) when
    there is no read model to compare."""
    url = make_url(settings.resolved_database_url)
    if _sqlite_file_missing(url):  # connecting would create an empty one
        report.findings.append(
            Finding("no-read-model", f"there is no read model at {url.database}", _NO_MODEL)
        )
        return None
    async with read_model(settings) as engine, engine.connect() as conn:
        await dialect_of(conn).read_one_moment(conn)
        if not await conn.run_sync(lambda sync: inspect(sync).has_table(checkpoint.name)):
            report.findings.append(
                Finding(
                    "no-read-model",
                    f"the database {url.render_as_string()} holds no read model tables",
                    _NO_MODEL,
                )
            )
            return None
        position = await read_checkpoint(conn)
        rows = await read_model_rows(conn)
        await conn.rollback()
    return position, rows


def _sqlite_file_missing(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and not Path(url.database or "").exists()


async def _walk(
    event_log: JetStreamLog,
    audit: LogAudit,
    scratch: AsyncEngine,
    subjects: Subjects,
    report: VerifyReport,
    bar: LogProgress,
) -> None:
    """One pass over the stream: every message to the log walk, and those up to the live
    checkpoint into the scratch model."""
    pending: list[StoredMessage] = []  # to replay, in transactions of _REPLAY_BATCH messages
    # The log reads its next page while this one is checked and applied to SQLite.
    pages = event_log.pages(0, until=report.last_position, max_batch=_PAGE)
    async with contextlib.aclosing(pages):
        async for page in pages:
            audit.feed(page)
            pending.extend(message for message in page if message.position <= report.checkpoint)
            if len(pending) >= _REPLAY_BATCH:
                await _replay(scratch, subjects, pending, report)
                pending = []
            bar.reached(page[-1].position)
    if pending:
        await _replay(scratch, subjects, pending, report)


async def _replay(
    scratch: AsyncEngine, subjects: Subjects, page: Sequence[StoredMessage], report: VerifyReport
) -> None:
    """Apply a page to the scratch model; if the page fails, apply it message by message to
    name the one that cannot be applied (the live projector is stuck on the same one)."""
    try:
        with _quiet_projector():
            async with scratch.begin() as conn:
                await apply_batch(conn, subjects, page)
        return
    except SQLAlchemyError:
        pass
    for message in page:
        try:
            async with scratch.begin() as conn:
                await apply_batch(conn, subjects, [message])
        except SQLAlchemyError as exc:
            report.findings.append(
                Finding(
                    kind="unappliable",
                    position=message.position,
                    flow_id=subjects.flow_id_of(message.subject),
                    problem=(
                        "the projector cannot apply it to a read model built from the log "
                        f"before it: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}"
                    ),
                    action=(
                        "the live projector stops here too (see the service log); find how this "
                        "message got into the log (other findings may say), then report it with "
                        "this position"
                    ),
                )
            )


@contextlib.contextmanager
def _quiet_projector() -> Iterator[None]:
    """The projector logs each message it parks; in the scratch replay those are verify's own
    findings, reported once in the report, not as log noise."""
    projector_log = logging.getLogger(apply_batch.__module__)
    level = projector_log.level
    projector_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        projector_log.setLevel(level)


def _compare(live: tuple[int, ModelRows], replayed: ModelRows, report: VerifyReport) -> None:
    position, rows = live
    if position > report.last_position:
        report.findings.append(
            Finding(
                "model-ahead",
                f"the live read model is at position {position} but stream {report.stream} "
                f"ends at {report.last_position}: it was built from another log, or the stream "
                "was reset",
                "check --stream/FLOWS_STREAM and --database-url/FLOWS_DATABASE_URL name one "
                "service's log and model; if they do, run `flows rebuild`",
            )
        )
        return
    if position < report.last_position:
        report.notes.append(
            f"the live read model was at position {position}: log messages after it were "
            "walked but not compared with the model (the projector had not applied them yet)"
        )
    report.findings.extend(compare_models(rows, replayed))
    report.findings.extend(compare_counts(rows, replayed))
    reported = {f.position for f in report.findings if f.kind == "malformed"}
    for row in rows.get("parked_event", {}).values():
        if row["position"] in reported:
            continue
        report.findings.append(
            Finding(
                kind="parked",
                position=row["position"],
                problem=(
                    f"the live projector parked the message on {row['subject']} as not a valid "
                    f"event: {row['reason']}"
                ),
                action=(
                    "find who published it and stop them; if it was meant to change a flow, "
                    "make that change through the service"
                ),
            )
        )
