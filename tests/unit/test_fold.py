"""The fast fold's pieces write exactly what the slower code they replace wrote (the whole fold
is compared against the SQLAlchemy apply in tests/integration/test_fold_identity.py)."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite

from events import jsoncodec
from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.model import Event, encode_event, format_occurred, occurred_text
from events.timefmt import format_datetime, parse_datetime
from projections.fold import Stamps, _str_list_json, fold
from projections.fold_sqlite import STAMPS, sqlite_time
from projections.tables import flow

SUBJECTS = Subjects("t")
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]


def some_times(count: int) -> list[datetime]:
    pick = random.Random(12)
    times = [
        datetime(1, 1, 2, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1000, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 2, 16, 49, 1, tzinfo=UTC),
    ]
    for _ in range(count):
        micro = pick.choice([0, pick.randrange(1_000_000)])
        when = datetime(pick.randrange(2, 9999), pick.randrange(1, 13), pick.randrange(1, 29),
                        pick.randrange(24), pick.randrange(60), pick.randrange(60), micro,
                        tzinfo=pick.choice(ZONES))  # fmt: skip
        times.append(when)
    return times


def test_format_occurred_is_format_datetime() -> None:
    for when in some_times(3000):
        assert format_occurred(when) == format_datetime(when), when


def test_sqlite_time_is_what_sqlalchemy_stores() -> None:
    dialect = sqlite.dialect()
    store = flow.c.created.type.dialect_impl(dialect).bind_processor(dialect)
    assert store is not None
    for when in some_times(3000):
        assert sqlite_time(when) == store(when), when


def test_an_events_time_text_is_format_occurred_whatever_the_writer_wrote() -> None:
    """The fold takes the event's own text when it is already `format_occurred`'s, and the
    SQLite column's text from that: both must be what formatting the parsed time gives."""
    for when in some_times(3000):
        utc = when.astimezone(UTC)
        written = [
            format_datetime(when),  # what the writer writes
            utc.isoformat(),  # +00:00
            utc.replace(tzinfo=None).isoformat(),  # naive, taken as UTC
            utc.isoformat(timespec="microseconds").replace("+00:00", "Z"),  # .000000Z
            when.isoformat(),  # another zone
        ]
        for text in written:
            try:
                occurred = parse_datetime(text)
            except ValueError:  # strftime writes years before 1000 unpadded: no ISO text
                assert when.year < 1000
                continue
            expected = format_occurred(occurred)
            assert occurred_text(text, occurred) == expected, text
            assert STAMPS.stored(occurred, expected) == sqlite_time(occurred), text


@pytest.mark.parametrize(
    "tags", [[], ["db"], ["a", "a", "b"], ["é\u2603", '"quoted" \\ back', "\x00\n\t", "😀", ""]]
)
def test_tags_json_is_json_dumps(tags: list[str]) -> None:
    assert _str_list_json(tags) == json.dumps(tags)


def test_the_digit_run_check_is_the_regex_it_replaced() -> None:
    regex = re.compile(rb"[0-9]{19}")
    pick = random.Random(3)
    for _ in range(20_000):
        payload = bytes(pick.choice(b'0123456789a"\xff') for _ in range(pick.randrange(60)))
        assert jsoncodec.may_be_inexact_in_orjson(payload) == (regex.search(payload) is not None)


def message(position: int, event: Event) -> StoredMessage:
    return StoredMessage(SUBJECTS.event(event.flow_id), encode_event(event), position)


def test_a_flow_created_and_updated_in_one_batch_is_inserted_once_as_updated() -> None:
    stamps = Stamps(stored=lambda when, _: when, document_time=str, json_value=lambda v: v)
    flow_id, other = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    at = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [
        message(1, Event("1", "FlowCreated", flow_id, at, {"name": "a", "tags": ["x"]})),
        message(2, Event("2", "FlowUpdated", flow_id, at + timedelta(seconds=1), {"tags": ["y"]})),
        message(3, Event("3", "FlowUpdated", other, at, {})),
    ]
    writes = fold(SUBJECTS, batch, stamps)
    kinds: list[tuple[str, Any]] = [next(writes)]
    kinds.append(writes.send(None))
    kinds.append(writes.send(None))  # the look-up of the flow created before this batch
    assert [kind for kind, _ in kinds] == ["insert_flow", "insert_tag", "fetch"]
    (row,) = kinds[0][1]
    assert row[2] == '["y"]' and row[5] == at + timedelta(seconds=1) and row[6] == 2
    assert b'"updated":"2026-01-01T00:00:01Z"' in row[7]
    assert kinds[1][1] == [(flow_id, "y")] and kinds[2][1] == [other]
    # The other flow is not in the model: nothing to update; the counts gain the new flow.
    assert writes.send([]) == ("count_flows", [(1,)])
    assert writes.send(None) == ("count_tags", [("y", 1)])
    with pytest.raises(StopIteration):
        writes.send(None)
