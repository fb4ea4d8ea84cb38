"""The projector's apply as it was written with SQLAlchemy Core (before projections/fold.py),
kept only as the reference the fast fold must match byte for byte (tests/unit/test_fold.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events import jsoncodec
from events.contract.errors import MalformedEvent
from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.model import RecordedEvent, decode_event, flow_document
from projections.tables import LIVE, ReadModelTables

log = logging.getLogger(__name__)


async def reference_apply_messages(
    conn: AsyncConnection,
    subjects: Subjects,
    batch: Sequence[StoredMessage],
    tables: ReadModelTables = LIVE,
) -> None:
    """Fold log messages into one table set, inside the caller's transaction; no checkpoint.

    The live projector, a rebuild (into its own table set) and an as-of scratch model all
    apply events through here, so they cannot disagree on what an event means.
    """
    events: list[RecordedEvent] = []
    for message in batch:
        if subjects.flow_id_of(message.subject) is None:
            continue
        try:
            events.append(decode_event(message.data, message.position))
        except MalformedEvent as exc:
            # Parked, not skipped: kept with the reason, for `flows verify` and health.
            log.error("parking %s (subject %s)", exc, message.subject)
            await conn.execute(
                insert(tables.parked_event).values(
                    position=message.position, subject=message.subject, reason=exc.reason
                )
            )
    for segment in _segments(events):
        creates = [e for e in segment if e.event.type == "FlowCreated"]
        updates = [e for e in segment if e.event.type == "FlowUpdated"]
        deletes = [e for e in segment if e.event.type == "FlowDeleted"]
        if creates:
            await _created(conn, tables, creates)
        if updates:
            await _updated(conn, tables, updates)
        if deletes:
            await _deleted(conn, tables, deletes)
    if events:  # the fold writes `flow_count` for every batch holding an event
        await recount(conn, tables)


async def recount(conn: AsyncConnection, tables: ReadModelTables = LIVE) -> None:
    """The kept counts recomputed from the rows they count, the slow and obvious way: every
    flow, and per tag its `flow_tag` rows (tags no flow carries have no row)."""
    await conn.execute(delete(tables.flow_count))
    total = select(literal(1), func.count()).select_from(tables.flow)
    await conn.execute(insert(tables.flow_count).from_select(["id", "flows"], total))
    await conn.execute(delete(tables.flow_tag_count))
    tag = tables.flow_tag.c.tag
    per_tag = select(tag, func.count()).group_by(tag)
    await conn.execute(insert(tables.flow_tag_count).from_select(["tag", "flows"], per_tag))


def _segments(events: list[RecordedEvent]) -> Iterable[list[RecordedEvent]]:
    """Cut the events into runs that may be applied as creates, then updates, then deletes.

    A flow's own events always come create, updates, delete, so that order is the log's order
    for every flow in a run; flows do not interact except through names. So a run ends only
    where that reordering could change the outcome: a create of a name a delete earlier in the
    run freed, or an event of a flow the run has already deleted. One run per batch is the
    usual case: a handful of statements per batch instead of a handful per change of type.
    """
    segment: list[RecordedEvent] = []
    freed_names: set[str] = set()
    deleted: set[str] = set()
    for recorded in events:
        event = recorded.event
        if event.flow_id in deleted or (
            event.type == "FlowCreated" and event.data.get("name") in freed_names
        ):
            yield segment
            segment, freed_names, deleted = [], set(), set()
        segment.append(recorded)
        if event.type == "FlowDeleted":
            deleted.add(event.flow_id)
            freed_names.add(str(event.data.get("name")))
    if segment:
        yield segment


async def _created(
    conn: AsyncConnection, tables: ReadModelTables, group: list[RecordedEvent]
) -> None:
    rows = []
    tag_rows: list[dict[str, Any]] = []
    for recorded in group:
        event = recorded.event
        name, tags, labels = event.data["name"], event.data["tags"], event.data.get("labels")
        when = event.occurred
        rows.append(
            {
                "id": event.flow_id,
                "name": name,
                "tags": tags,
                "labels": labels,
                "created": when,
                "updated": when,
                "version": recorded.position,
                "document": jsoncodec.dumps(
                    flow_document(event.flow_id, when, when, name, tags, labels)
                ),
            }
        )
        tag_rows.extend(_tag_rows(event.flow_id, tags))
    await conn.execute(insert(tables.flow), rows)
    if tag_rows:
        await conn.execute(insert(tables.flow_tag), tag_rows)


async def _updated(
    conn: AsyncConnection, tables: ReadModelTables, group: list[RecordedEvent]
) -> None:
    """A run of updates, folded per flow first: three statements for the run, not per event."""
    flow, flow_tag = tables.flow, tables.flow_tag
    latest: dict[str, dict[str, Any]] = {}
    for recorded in group:
        event = recorded.event
        values = latest.setdefault(event.flow_id, {"b_id": event.flow_id})
        values["b_updated"] = event.occurred
        values["b_version"] = recorded.position
        if "tags" in event.data:
            values["b_tags"] = event.data["tags"]
    # What the flows' documents keep from before: the update changes `updated` and maybe tags.
    kept = select(flow.c.id, flow.c.name, flow.c.tags, flow.c.labels, flow.c.created)
    existing = {row.id: row for row in await conn.execute(kept.where(flow.c.id.in_(list(latest))))}
    for missing in latest.keys() - existing.keys():
        log.warning(
            "FlowUpdated names flow %s, which the read model does not hold (positions %d..%d)",
            missing,
            group[0].position,
            group[-1].position,
        )
    for flow_id, values in latest.items():
        if (row := existing.get(flow_id)) is not None:
            tags = values.get("b_tags", row.tags)
            values["b_document"] = jsoncodec.dumps(
                flow_document(flow_id, row.created, values["b_updated"], row.name, tags, row.labels)
            )
    plain = [v for fid, v in latest.items() if fid in existing and "b_tags" not in v]
    tagged = [v for fid, v in latest.items() if fid in existing and "b_tags" in v]
    # Bind names differ from column names: SQLAlchemy reserves those for the SET clause.
    touch = update(flow).where(flow.c.id == bindparam("b_id"))
    touch = touch.values(
        updated=bindparam("b_updated", type_=flow.c.updated.type),
        version=bindparam("b_version", type_=flow.c.version.type),
        document=bindparam("b_document", type_=flow.c.document.type),
    )
    if plain:
        await conn.execute(touch, plain)
    if tagged:
        await conn.execute(touch.values(tags=bindparam("b_tags", type_=flow.c.tags.type)), tagged)
        changed = [values["b_id"] for values in tagged]
        await conn.execute(delete(flow_tag).where(flow_tag.c.flow_id.in_(changed)))
        rows = [row for v in tagged for row in _tag_rows(v["b_id"], v["b_tags"])]
        if rows:
            await conn.execute(insert(flow_tag), rows)


async def _deleted(
    conn: AsyncConnection, tables: ReadModelTables, group: list[RecordedEvent]
) -> None:
    # Prefect's foreign keys cascade a flow's deletion to its deployments, flow runs and their
    # task runs; doing it explicitly keeps SQLite and PostgreSQL alike.
    flow, flow_tag, deployment = tables.flow, tables.flow_tag, tables.deployment
    flow_run, task_run = tables.flow_run, tables.task_run
    flow_ids = [recorded.event.flow_id for recorded in group]
    runs = select(flow_run.c.id).where(flow_run.c.flow_id.in_(flow_ids))
    await conn.execute(delete(task_run).where(task_run.c.flow_run_id.in_(runs)))
    await conn.execute(delete(flow_run).where(flow_run.c.flow_id.in_(flow_ids)))
    await conn.execute(delete(deployment).where(deployment.c.flow_id.in_(flow_ids)))
    await conn.execute(delete(flow_tag).where(flow_tag.c.flow_id.in_(flow_ids)))
    await conn.execute(delete(flow).where(flow.c.id.in_(flow_ids)))


def _tag_rows(flow_id: str, tags: Iterable[str]) -> Iterable[dict[str, Any]]:
    return ({"flow_id": flow_id, "tag": tag} for tag in dict.fromkeys(tags))
