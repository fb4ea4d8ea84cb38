"""The read model's tables (SQLAlchemy Core), for SQLite and PostgreSQL alike.

Every value here is derived from events (timestamps from the event's `occurred`, `version` from
its log position), so rebuilding from the log gives exactly the same rows.

`deployment`, `work_queue`, `work_pool`, `flow_run` and `task_run` carry just the columns that
Prefect's cross-entity filters read; they are fed by a later issue and are empty until then.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

__all__ = [
    "CHECKPOINT_PROJECTION",
    "UTCDateTime",
    "checkpoint",
    "deployment",
    "flow",
    "flow_run",
    "flow_tag",
    "metadata",
    "parked_event",
    "task_run",
    "work_pool",
    "work_queue",
]

CHECKPOINT_PROJECTION = "flows"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite keeps naive text (sortable as stored); PostgreSQL keeps `timestamptz`.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> Any:
    """JSON that filters query (JSONB operators on PostgreSQL)."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _json_document() -> Any:
    """JSON that is only stored and returned: kept as written (JSONB would reorder a label
    object's keys), so both backends answer byte for byte alike."""
    return JSON(none_as_null=True)


# Names sort in code-point order, as Prefect's SQLite (BINARY collation) does; PostgreSQL's
# default collation is locale-aware, so it gets the "C" collation explicitly.
_NAME = Text().with_variant(Text(collation="C"), "postgresql")
_ID = String(36)  # canonical lower-case UUID text, the same on both backends

metadata = MetaData()

flow = Table(
    "flow",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("name", _NAME, nullable=False),
    # Filters on a flow's tags read `flow_tag`, so both columns are plain stored documents.
    Column("tags", _json_document(), nullable=False),
    Column("labels", _json_document(), nullable=True),
    Column("created", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime(), nullable=False),
    # Log position of the flow's latest event.
    Column("version", BigInteger, nullable=False),
    Index("uq_flow__name", "name", unique=True),
    Index("ix_flow__created", "created"),
    Index("ix_flow__updated", "updated"),
)

# One row per distinct tag of a flow: `tags.all_` and `tags.is_null_` become index lookups
# instead of a JSON scan of every flow.
flow_tag = Table(
    "flow_tag",
    metadata,
    Column("flow_id", _ID, ForeignKey("flow.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", Text(), primary_key=True),
    Index("ix_flow_tag__tag_flow_id", "tag", "flow_id"),
)

# The projector's checkpoint: the last log position applied, written in the same transaction
# as the rows it produced.
checkpoint = Table(
    "projection_checkpoint",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

work_pool = Table(
    "work_pool",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("name", Text(), nullable=False),
    Column("type", Text(), nullable=False),
)

work_queue = Table(
    "work_queue",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("name", Text(), nullable=False),
    Column("work_pool_id", _ID, ForeignKey("work_pool.id", ondelete="CASCADE"), nullable=False),
)

deployment = Table(
    "deployment",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("flow_id", _ID, ForeignKey("flow.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", Text(), nullable=False),
    Column("paused", Boolean(), nullable=False, default=False),
    Column("tags", _json(), nullable=False),
    Column("work_queue_id", _ID, ForeignKey("work_queue.id", ondelete="SET NULL"), nullable=True),
    Column("work_queue_name", Text(), nullable=True),
)

flow_run = Table(
    "flow_run",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("flow_id", _ID, ForeignKey("flow.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", Text(), nullable=False),
    Column("tags", _json(), nullable=False),
    Column("deployment_id", _ID, nullable=True),
    Column("work_queue_name", Text(), nullable=True),
    Column("state_type", String(16), nullable=True),
    Column("state_name", Text(), nullable=True),
    Column("flow_version", Text(), nullable=True),
    Column("start_time", UTCDateTime(), nullable=True),
    Column("end_time", UTCDateTime(), nullable=True),
    Column("expected_start_time", UTCDateTime(), nullable=True),
    Column("next_scheduled_start_time", UTCDateTime(), nullable=True),
    Column("parent_task_run_id", _ID, nullable=True),
    Column("idempotency_key", Text(), nullable=True),
    Column("created_by", _json(), nullable=True),
)

task_run = Table(
    "task_run",
    metadata,
    Column("id", _ID, primary_key=True),
    Column(
        "flow_run_id", _ID, ForeignKey("flow_run.id", ondelete="CASCADE"), nullable=True, index=True
    ),
    Column("name", Text(), nullable=False),
    Column("tags", _json(), nullable=False),
    Column("state_type", String(16), nullable=True),
    Column("state_name", Text(), nullable=True),
    Column("start_time", UTCDateTime(), nullable=True),
    Column("end_time", UTCDateTime(), nullable=True),
    Column("expected_start_time", UTCDateTime(), nullable=True),
)

# Log messages on an event subject that are not valid events: parked with the reason, never
# silently skipped, so an operator (and `flows verify`) can see them.
parked_event = Table(
    "parked_event",
    metadata,
    Column("position", BigInteger, primary_key=True),
    Column("subject", Text(), nullable=False),
    Column("reason", Text(), nullable=False),
)
