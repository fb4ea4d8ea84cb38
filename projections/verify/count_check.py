"""`flows verify`'s check of the kept counts: the live `flow_count` and `flow_tag_count` against
the counts of the flows and tags a replay of the log produced.

The expected counts are recounted from the replayed rows here, not taken from the replay's own
counters: those come from the same fold as the live ones, and would repeat its mistakes. A
missing counter row is a count of 0 (what a count read answers for it).
"""

from __future__ import annotations

from collections import Counter

from projections.tables import LIVE
from projections.verify.model_diff import ModelRows
from projections.verify.report import Finding

__all__ = ["compare_counts"]

_RECOUNT = (
    "counts are answered from these counters, so they answer wrong until it is put right: run "
    "`flows rebuild` to rebuild the read model (counters included) from the log, then "
    "`flows verify` again"
)


def compare_counts(live: ModelRows, replayed: ModelRows, shown: int = 20) -> list[Finding]:
    """A `count-differs` finding for the total and for each tag counted wrong (at most `shown`
    tags named, then how many more)."""
    findings: list[Finding] = []
    kept_total = sum(row["flows"] for row in live.get(LIVE.flow_count.name, {}).values())
    total = len(replayed.get(LIVE.flow.name, {}))
    if kept_total != total:
        findings.append(
            _finding(f"flow_count keeps {kept_total} flows; the log has {total} flows alive")
        )
    kept = {row["tag"]: row["flows"] for row in live.get(LIVE.flow_tag_count.name, {}).values()}
    counted = Counter(row["tag"] for row in replayed.get(LIVE.flow_tag.name, {}).values())
    wrong = sorted(tag for tag in kept.keys() | counted.keys() if kept.get(tag, 0) != counted[tag])
    for tag in wrong[:shown]:
        findings.append(
            _finding(
                f"flow_tag_count keeps {kept.get(tag, 0)} flows with tag {tag!r}; the log has "
                f"{counted[tag]} flows alive with it"
            )
        )
    if len(wrong) > shown:
        findings.append(_finding(f"{len(wrong) - shown} more tags are counted wrong (not listed)"))
    return findings


def _finding(problem: str) -> Finding:
    return Finding(kind="count-differs", problem=problem, action=_RECOUNT)
