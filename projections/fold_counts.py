"""The net change one batch makes to the kept counts (`flow_count`, `flow_tag_count`).

The fold (projections/fold.py) tells this what each event did to a flow whose tags it knows;
the batch then writes the sums as one upsert per counter table, in the batch's transaction.
Counting in Python first means one write per table per batch, however many events it holds.

A flow counts once per distinct tag, as `flow_tag` stores it (one row per distinct tag), which
is what a `tags.all_` count over `flow_tag` counts. Events of flows the model does not hold
(an update or delete of an unknown id) change nothing, so a count never goes below zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["CountDeltas"]


class CountDeltas:
    def __init__(self) -> None:
        self.flows = 0
        self.tags: Counter[str] = Counter()

    def created(self, tags: Iterable[str]) -> None:
        self.flows += 1
        self._add(tags, 1)

    def deleted(self, tags: Iterable[str]) -> None:
        self.flows -= 1
        self._add(tags, -1)

    def retagged(self, before: Iterable[str], after: Iterable[str]) -> None:
        self._add(before, -1)
        self._add(after, 1)

    def _add(self, tags: Iterable[str], step: int) -> None:
        for tag in set(tags):
            self.tags[tag] += step

    def writes(self) -> list[tuple[str, list[Any]]]:
        """The batch's counter writes, as the fold's (kind, rows) pairs:
        `count_flows` [(change,)], `count_tags` [(tag, change)] for each tag that changed, and
        `drop_empty_tags` [tag] for those that went down (their rows go once they reach 0)."""
        changed = sorted((tag, step) for tag, step in self.tags.items() if step)
        writes: list[tuple[str, list[Any]]] = [("count_flows", [(self.flows,)])]
        if changed:
            writes.append(("count_tags", changed))
            lowered = [tag for tag, step in changed if step < 0]
            if lowered:
                writes.append(("drop_empty_tags", lowered))
        return writes
