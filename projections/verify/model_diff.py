"""`flows verify`'s comparison of the live read model with a replay of the log, row by row.

Both sides are read whole, each in one transaction, as {table: {primary key: row}}; the tables
are every table the projector writes (the checkpoint is where the comparison is made, not a
row to compare). The kept counts are compared by projections/verify/count_check.py, against a
recount, not row by row here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.tables import LIVE
from projections.verify.report import Finding

__all__ = ["COMPARED_TABLES", "ModelRows", "compare_models", "read_model_rows"]

# Every table the projector writes (the live set), read whole.
READ_TABLES: tuple[Table, ...] = LIVE.tables
# Those compared row by row.
COMPARED_TABLES: tuple[Table, ...] = tuple(t for t in LIVE.tables if t not in LIVE.counters)

ModelRows = dict[str, dict[tuple[Any, ...], dict[str, Any]]]

_REBUILD = (
    "the live read model disagrees with its own log: run `flows rebuild` to rebuild it from "
    "the log (settle any log problems reported above first), then `flows verify` again"
)


async def read_model_rows(conn: AsyncConnection) -> ModelRows:
    """Every row of every compared table, keyed by primary key (inside the caller's
    transaction, so all tables are read at one point)."""
    rows: ModelRows = {}
    for table in READ_TABLES:
        keys = list(table.primary_key.columns)
        result = await conn.execute(select(table).order_by(*keys))
        rows[str(table.name)] = {
            tuple(row[key.name] for key in keys): {str(k): v for k, v in row.items()}
            for row in result.mappings()
        }
    return rows


def compare_models(
    live: ModelRows, replayed: ModelRows, shown_per_table: int = 20
) -> list[Finding]:
    """A finding per differing row (at most `shown_per_table` per table, then a count)."""
    findings: list[Finding] = []
    for table in COMPARED_TABLES:
        mine, theirs = live.get(table.name, {}), replayed.get(table.name, {})
        differing = [
            key
            for key in sorted(mine.keys() | theirs.keys(), key=repr)
            if mine.get(key) != theirs.get(key)
        ]
        for key in differing[:shown_per_table]:
            findings.append(_row_finding(table, key, mine.get(key), theirs.get(key)))
        if len(differing) > shown_per_table:
            findings.append(
                Finding(
                    kind="model-differs",
                    problem=(
                        f"{len(differing) - shown_per_table} more rows of table {table.name} "
                        "differ between the live read model and the replay (not listed)"
                    ),
                    action=_REBUILD,
                )
            )
    return findings


def _row_finding(
    table: Table, key: tuple[Any, ...], live: dict[str, Any] | None, replayed: dict[str, Any] | None
) -> Finding:
    shown_key = ", ".join(str(part) for part in key)
    if live is None:
        problem = f"table {table.name}: the replay has row ({shown_key}), the live model lacks it"
    elif replayed is None:
        problem = (
            f"table {table.name}: the live model has row ({shown_key}), which the log does not "
            "produce"
        )
    else:
        columns = [name for name in replayed if live.get(name) != replayed[name]]
        changes = "; ".join(
            f"{name}: live {live.get(name)!r}, replay {replayed[name]!r}" for name in columns
        )
        problem = f"table {table.name}, row ({shown_key}): {changes}"
    row = replayed or live or {}
    position = row.get("version") if table is LIVE.flow else row.get("position")
    flow_id = row.get("id") if table is LIVE.flow else row.get("flow_id")
    return Finding(
        kind="model-differs",
        position=position if isinstance(position, int) else None,
        flow_id=flow_id if isinstance(flow_id, str) else None,
        problem=problem,
        action=_REBUILD,
    )
