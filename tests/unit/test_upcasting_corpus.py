"""The recorded corpus (tests/corpus) of events of every schema version: it always replays to
the same read model, and it passes verify's walk of the log with its pre-chain events noted."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from events.chain import digest
from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.model import decode_event
from events.timefmt import format_datetime
from events.upcasting import SCHEMA_VERSION
from projections.projector import apply_batch
from projections.scratch import scratch_model
from projections.verify.count_check import compare_counts
from projections.verify.log_walk import LogAudit
from projections.verify.model_diff import ModelRows, read_model_rows

CORPUS = Path(__file__).parent.parent / "corpus"
LOG = CORPUS / "schema-1-then-2.jsonl"
EXPECTED = CORPUS / "schema-1-then-2.expected.json"
SUBJECTS = Subjects("corpus")


def corpus_messages() -> list[StoredMessage]:
    lines = LOG.read_text(encoding="utf-8").splitlines()
    return [
        StoredMessage(raw["subject"], raw["payload"].encode(), raw["position"])
        for raw in map(orjson.loads, lines)
    ]


def model_json(rows: ModelRows) -> dict[str, list[dict[str, Any]]]:
    """The rows as the expected snapshot stores them (timestamps in the contract's format)."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):  # a flow's stored reply document: JSON text
            return value.decode()
        return format_datetime(value) if isinstance(value, datetime) else value

    return {
        table: [{name: plain(value) for name, value in row.items()} for row in found.values()]
        for table, found in rows.items()
    }


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    async with scratch_model() as engine:
        yield engine


def test_the_corpus_holds_every_schema_version() -> None:
    # A new schema version must come with recorded events of it (see tests/corpus/README.md).
    written = {decode_event(m.data, m.position).schema for m in corpus_messages() if is_event(m)}
    assert written == set(range(1, SCHEMA_VERSION + 1))


def is_event(message: StoredMessage) -> bool:
    return SUBJECTS.flow_id_of(message.subject) is not None


@pytest.mark.parametrize("page", [1, 7, 1000])
async def test_the_corpus_replays_to_the_recorded_read_model(
    engine: AsyncEngine, page: int
) -> None:
    messages = corpus_messages()
    for start in range(0, len(messages), page):
        async with engine.begin() as conn:
            await apply_batch(conn, SUBJECTS, messages[start : start + page])
    async with engine.connect() as conn:
        rows = await read_model_rows(conn)
    # The recorded model predates the kept counts (read-model schema 3), and is never edited:
    # its tables compare as recorded, the counters against a recount of the replayed rows.
    recorded = orjson.loads(EXPECTED.read_bytes())
    assert model_json({table: rows[table] for table in recorded}) == recorded
    assert compare_counts(rows, rows) == []
    assert rows["flow_count"] == {(1,): {"id": 1, "flows": len(recorded["flow"])}}


def test_the_corpus_passes_the_log_walk_with_its_pre_chain_events_noted() -> None:
    messages = corpus_messages()
    audit = LogAudit(SUBJECTS, "CORPUS")
    audit.feed(messages)
    notes = audit.finish(messages[-1].position)
    assert audit.findings == []
    assert any("before the tamper-evidence chain existed" in note for note in notes), notes


def test_schema_1_events_read_as_unlinked_and_keep_their_meaning() -> None:
    first = corpus_messages()[0]
    assert b'"schema"' not in first.data
    recorded = decode_event(first.data, first.position)
    assert recorded.schema == 1
    assert recorded.event.prev is None
    shown = recorded.as_json()
    assert shown["schema"] == 1
    assert shown["prev"] is None
    # Every field it was written with means what it meant.
    assert {k: v for k, v in shown.items() if k not in ("schema", "prev", "position")} == (
        orjson.loads(first.data)
    )


def test_the_first_schema_2_event_of_a_schema_1_flow_links_to_its_last_schema_1_event() -> None:
    by_subject: dict[str, list[StoredMessage]] = {}
    for message in filter(is_event, corpus_messages()):
        by_subject.setdefault(message.subject, []).append(message)
    bridged = 0
    for trail in by_subject.values():
        for before, after in itertools.pairwise(trail):
            old, new = (decode_event(m.data, m.position) for m in (before, after))
            if old.schema == 1 and new.schema == 2:
                assert new.event.prev == digest(before.data)
                bridged += 1
    assert bridged >= 2
