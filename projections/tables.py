"""The read model's tables (SQLAlchemy Core), for SQLite and PostgreSQL alike.

Every value here is derived from events (timestamps from the event's `occurred`, `version` from
its log position), so rebuilding from the log gives exactly the same rows.

`deployment`, `work_queue`, `work_pool`, `flow_run` and `task_run` carry just the columns that
Prefect's cross-entity filters read; they are fed by a later issue and are empty until then.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

__all__ = [
    "CHECKPOINT_PROJECTION",
    "LIVE",
    "ReadModelTables",
    "UTCDateTime",
    "checkpoint",
    "deployment",
    "flow",
    "flow_count",
    "flow_run",
    "flow_tag",
    "flow_tag_count",
    "metadata",
    "parked_event",
    "read_model_tables",
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


# The live tables renamed out of the way by a rebuild's swap, dropped after its commit.
RETIRED_PREFIX = "retired_"


@dataclass(frozen=True, slots=True)
class ReadModelTables:
    """One complete set of the read model's tables (everything the projector writes).

    The live set has the canonical names; `flows rebuild` builds a second set under a prefix
    (`rebuild_flow`, ...) with the same apply code, then renames it in. `index_prefix` keeps
    the second set's index names apart from the live ones (index names are database-wide).
    """

    metadata: MetaData
    prefix: str
    index_prefix: str
    flow: Table
    flow_tag: Table
    work_pool: Table
    work_queue: Table
    deployment: Table
    flow_run: Table
    task_run: Table
    parked_event: Table
    flow_count: Table
    flow_tag_count: Table

    @property
    def tables(self) -> tuple[Table, ...]:
        """Parents before children (creation order; drop in reverse). The counters come last:
        a PostgreSQL swap locks tables in this order, and queries lock `flow` first."""
        return (
            self.flow,
            self.flow_tag,
            self.work_pool,
            self.work_queue,
            self.deployment,
            self.flow_run,
            self.task_run,
            self.parked_event,
            *self.counters,
        )

    @property
    def counters(self) -> tuple[Table, ...]:
        """The tables that keep counts of other tables' rows (projections/fold_counts.py)."""
        return (self.flow_count, self.flow_tag_count)

    def canonical(self, table: Table) -> str:
        """The live name of one of this set's tables."""
        return table.name.removeprefix(self.prefix)

    def canonical_index(self, name: str) -> str:
        return name.removeprefix(self.index_prefix)

    def canonical_name(self, name: str) -> str:
        """Any name this set gave a table, index or constraint, as the live set has it:
        `rb1234abcd_uq_flow__name` -> `uq_flow__name`; `rebuild_flow_pkey` -> `flow_pkey`."""
        if name.startswith(self.index_prefix):
            return self.canonical_index(name)
        return name.removeprefix(self.prefix)


def read_model_tables(
    metadata: MetaData, prefix: str = "", index_prefix: str = ""
) -> ReadModelTables:
    """The read model's tables in `metadata`, named `<prefix><table>`, indexes
    `<index_prefix><index>`. Every index is named explicitly, so a rebuilt set's indexes can be
    renamed to exactly the live names (PostgreSQL)."""
    p, ix = prefix, index_prefix

    flow = Table(
        f"{p}flow",
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
        # The flow as a reply carries it: Prefect's JSON, written by the projector from the
        # events only (so a rebuild reproduces it byte for byte and `flows verify` compares
        # it). Reads answer with these bytes as they are.
        Column("document", LargeBinary(), nullable=False),
        Index(f"{ix}uq_flow__name", "name", unique=True),
        Index(f"{ix}ix_flow__created", "created"),
        Index(f"{ix}ix_flow__updated", "updated"),
    )

    # One row per distinct tag of a flow: `tags.all_` and `tags.is_null_` become index lookups
    # instead of a JSON scan of every flow.
    flow_tag = Table(
        f"{p}flow_tag",
        metadata,
        Column("flow_id", _ID, ForeignKey(f"{p}flow.id", ondelete="CASCADE"), primary_key=True),
        Column("tag", Text(), primary_key=True),
        Index(f"{ix}ix_flow_tag__tag_flow_id", "tag", "flow_id"),
    )

    work_pool = Table(
        f"{p}work_pool",
        metadata,
        Column("id", _ID, primary_key=True),
        Column("name", Text(), nullable=False),
        Column("type", Text(), nullable=False),
    )

    work_queue = Table(
        f"{p}work_queue",
        metadata,
        Column("id", _ID, primary_key=True),
        Column("name", Text(), nullable=False),
        Column(
            "work_pool_id",
            _ID,
            ForeignKey(f"{p}work_pool.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )

    deployment = Table(
        f"{p}deployment",
        metadata,
        Column("id", _ID, primary_key=True),
        Column("flow_id", _ID, ForeignKey(f"{p}flow.id", ondelete="CASCADE"), nullable=False),
        Column("name", Text(), nullable=False),
        Column("paused", Boolean(), nullable=False, default=False),
        Column("tags", _json(), nullable=False),
        Column(
            "work_queue_id",
            _ID,
            ForeignKey(f"{p}work_queue.id", ondelete="SET NULL"),
            nullable=True,
        ),
        Column("work_queue_name", Text(), nullable=True),
        # The name SQLAlchemy gives `index=True` on the live table, kept for existing databases.
        Index(f"{ix}ix_deployment_flow_id", "flow_id"),
    )

    flow_run = Table(
        f"{p}flow_run",
        metadata,
        Column("id", _ID, primary_key=True),
        Column("flow_id", _ID, ForeignKey(f"{p}flow.id", ondelete="CASCADE"), nullable=False),
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
        Index(f"{ix}ix_flow_run_flow_id", "flow_id"),
    )

    task_run = Table(
        f"{p}task_run",
        metadata,
        Column("id", _ID, primary_key=True),
        Column(
            "flow_run_id",
            _ID,
            ForeignKey(f"{p}flow_run.id", ondelete="CASCADE"),
            nullable=True,
        ),
        Column("name", Text(), nullable=False),
        Column("tags", _json(), nullable=False),
        Column("state_type", String(16), nullable=True),
        Column("state_name", Text(), nullable=True),
        Column("start_time", UTCDateTime(), nullable=True),
        Column("end_time", UTCDateTime(), nullable=True),
        Column("expected_start_time", UTCDateTime(), nullable=True),
        Index(f"{ix}ix_task_run_flow_run_id", "flow_run_id"),
    )

    # Log messages on an event subject that are not valid events: parked with the reason,
    # never silently skipped, so an operator (and `flows verify`) can see them.
    parked_event = Table(
        f"{p}parked_event",
        metadata,
        # The log position: never generated here (no sequence to carry across a rebuild).
        Column("position", BigInteger, primary_key=True, autoincrement=False),
        Column("subject", Text(), nullable=False),
        Column("reason", Text(), nullable=False),
    )

    # Counts kept by the projector in each batch's transaction, so the common counts (every
    # flow; the flows carrying one tag) are one row's read instead of a walk over a million
    # rows (projections/kept_counts.py). One row, id 1, once any event was folded.
    flow_count = Table(
        f"{p}flow_count",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("flows", BigInteger, nullable=False),
    )
    # Per tag, how many live flows carry it (`flow_tag`'s rows per tag); a tag no flow carries
    # has no row.
    flow_tag_count = Table(
        f"{p}flow_tag_count",
        metadata,
        Column("tag", Text(), primary_key=True),
        Column("flows", BigInteger, nullable=False),
    )
    return ReadModelTables(
        metadata,
        prefix,
        index_prefix,
        flow,
        flow_tag,
        work_pool,
        work_queue,
        deployment,
        flow_run,
        task_run,
        parked_event,
        flow_count,
        flow_tag_count,
    )


metadata = MetaData()
LIVE = read_model_tables(metadata)

flow = LIVE.flow
flow_tag = LIVE.flow_tag
work_pool = LIVE.work_pool
work_queue = LIVE.work_queue
deployment = LIVE.deployment
flow_run = LIVE.flow_run
task_run = LIVE.task_run
parked_event = LIVE.parked_event
flow_count = LIVE.flow_count
flow_tag_count = LIVE.flow_tag_count

# The projector's checkpoint: the last log position applied, written in the same transaction
# as the rows it produced. Not part of a table set: a rebuild moves the live row as it swaps.
checkpoint = Table(
    "projection_checkpoint",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# The version of the read model's tables (and of what the projector writes into them). An
# instance that finds a model of another version, or of none (written before versions were
# recorded), rebuilds it from the log before it answers queries (services/bootstrap.py): bump
# it with every change to the tables or to what an event writes.
# 2: flow.document, the reply bytes of each flow; 3: flow_count and flow_tag_count, the counts
# the projector keeps.
SCHEMA_VERSION = 3

# One row: the version of the live tables. Not part of a table set: a rebuild builds the current
# version, and records it once swapped in.
schema_version = Table(
    "read_model_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)
