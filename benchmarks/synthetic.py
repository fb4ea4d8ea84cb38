"""Synthetic log messages, encoded exactly as the writer encodes them (events/rules.py decides,
events/model.py encodes), for seeding a stream or a read model fast without going through the
service's request path.

Flow `i` is named `seed-<i>`, tagged `db` and, for odd `i`, `blue`; it is created with its name
marker, and every fourth flow is then updated once (chained to its create, as the writer does).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

from events.chain import link
from events.contract.subjects import Subjects
from events.model import encode_event
from events.records import NameMarker
from events.rules import decide_create, decide_update
from events.timefmt import utcnow

__all__ = ["flow_messages", "tags_of"]


def tags_of(index: int) -> list[str]:
    return ["db", "blue"] if index % 2 else ["db"]


def flow_messages(
    subjects: Subjects, start: int, count: int, *, updates: bool = True
) -> Iterator[tuple[str, bytes]]:
    """(subject, payload) of the log messages of flows `start .. start+count-1`, in log order."""
    epoch = utcnow()
    for index in range(start, start + count):
        flow_id = str(uuid.UUID(int=index + 1))
        name = f"seed-{index:07d}"
        now = epoch + timedelta(microseconds=index)
        created = encode_event(
            link(
                decide_create(
                    name=name,
                    tags=tags_of(index),
                    labels=None,
                    flow_id=flow_id,
                    event_id=str(uuid.uuid4()),
                    now=now,
                    command_id=str(uuid.uuid4()),
                ),
                None,
            )
        )
        yield subjects.event(flow_id), created
        yield subjects.name(name), NameMarker(name, flow_id, True).encode()
        if updates and index % 4 == 0:
            updated = decide_update(
                current="FlowCreated",
                flow_id=flow_id,
                tags=[*tags_of(index), "nightly"],
                event_id=str(uuid.uuid4()),
                now=now + timedelta(seconds=1),
                command_id=str(uuid.uuid4()),
            )
            yield subjects.event(flow_id), encode_event(link(updated, created))
