"""The kept counts' deltas (projections/fold_counts.py) as the fold computes them, batch by
batch, against a model kept in a dict: after every batch the counters equal a recount of the
flows, counting a flow once per distinct tag, as `flow_tag` (and so a `tags.all_` count) does."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from events.contract.subjects import Subjects
from events.log import StoredMessage
from events.model import Event, encode_event
from projections.fold import Stamps, fold
from projections.fold_counts import CountDeltas

SUBJECTS = Subjects("t")
AT = datetime(2026, 1, 1, tzinfo=UTC)
STAMPS = Stamps(stored=lambda when, _: when, document_time=lambda _: "", json_value=json.loads)
A, B, C = (f"00000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))


class DictModel:
    """What the writers would store, as far as the counts are concerned."""

    def __init__(self) -> None:
        self.tags: dict[str, list[str]] = {}  # flow id -> tags as stored
        self.total = 0
        self.per_tag: dict[str, int] = {}
        self.position = 0

    def apply(self, *events: tuple[str, str, dict[str, Any]]) -> list[str]:
        """Fold one batch of (type, flow id, data); the kinds of write it made."""
        batch = []
        for kind, flow_id, data in events:
            self.position += 1
            event = Event(str(self.position), kind, flow_id, AT, data)
            batch.append(StoredMessage(SUBJECTS.event(flow_id), encode_event(event), self.position))
        writes = fold(SUBJECTS, batch, STAMPS)
        kinds, answer = [], None
        while True:
            try:
                kind, rows = writes.send(answer)
            except StopIteration:
                return kinds
            kinds.append(kind)
            answer = self._write(kind, rows)

    def _write(self, kind: str, rows: list[Any]) -> Any:
        if kind == "fetch":
            return [(fid, "name", json.dumps(self.tags[fid]), None, AT) for fid in rows
                    if fid in self.tags]  # fmt: skip
        if kind == "insert_flow":
            self.tags.update((row[0], json.loads(row[2])) for row in rows)
        elif kind == "update_tagged":
            self.tags.update((row[-1], json.loads(row[-2])) for row in rows)
        elif kind == "delete_flows":
            for flow_id in rows:
                self.tags.pop(flow_id, None)  # unknown ids: SQL deletes nothing
        elif kind == "count_flows":
            ((change,),) = rows
            self.total += change
        elif kind == "count_tags":
            for tag, change in rows:
                self.per_tag[tag] = self.per_tag.get(tag, 0) + change
        elif kind == "drop_empty_tags":
            for tag in rows:
                if self.per_tag[tag] <= 0:
                    del self.per_tag[tag]
        return None

    def recount(self) -> tuple[int, dict[str, int]]:
        per_tag = Counter(tag for tags in self.tags.values() for tag in set(tags))
        return len(self.tags), dict(per_tag)

    def check(self) -> None:
        assert (self.total, self.per_tag) == self.recount()
        assert all(count > 0 for count in self.per_tag.values())


def created(flow_id: str, name: str, *tags: str) -> tuple[str, str, dict[str, Any]]:
    return ("FlowCreated", flow_id, {"name": name, "tags": list(tags)})


def updated(flow_id: str, *tags: str) -> tuple[str, str, dict[str, Any]]:
    return ("FlowUpdated", flow_id, {"tags": list(tags)})


def deleted(flow_id: str, name: str) -> tuple[str, str, dict[str, Any]]:
    return ("FlowDeleted", flow_id, {"name": name})


def test_creates_count_each_flow_once_per_distinct_tag() -> None:
    model = DictModel()
    model.apply(created(A, "a", "db", "db", "x"), created(B, "b", "db"), created(C, "c"))
    model.check()
    assert (model.total, model.per_tag) == (3, {"db": 2, "x": 1})


def test_a_tag_update_moves_the_flow_between_tags() -> None:
    model = DictModel()
    model.apply(created(A, "a", "db", "x"), created(B, "b", "db"))
    model.apply(updated(A, "x", "y", "y"), ("FlowUpdated", B, {}))  # B: no tags, no change
    model.check()
    assert (model.total, model.per_tag) == (2, {"db": 1, "x": 1, "y": 1})
    kinds = model.apply(updated(B, "db", "db"))  # the same tags again: nothing to count
    assert kinds[-1] == "count_flows"
    model.check()


def test_deletes_subtract_what_the_flow_carried_and_drop_emptied_tags() -> None:
    model = DictModel()
    model.apply(created(A, "a", "db", "x"), created(B, "b", "db"))
    model.apply(updated(A, "z"), deleted(A, "a"))  # updated then deleted in one batch
    model.check()
    assert (model.total, model.per_tag) == (1, {"db": 1})
    model.apply(deleted(B, "b"))
    model.check()
    assert (model.total, model.per_tag) == (0, {})


def test_a_flow_created_and_deleted_in_one_batch_counts_nothing() -> None:
    model = DictModel()
    model.apply(created(A, "a", "db"), updated(A, "x"), deleted(A, "a"))
    model.check()
    assert (model.total, model.per_tag) == (0, {})


def test_a_name_recreated_after_its_delete_counts_the_new_flow() -> None:
    model = DictModel()
    model.apply(created(A, "a", "old"))
    model.apply(deleted(A, "a"), created(B, "a", "new"))  # two runs of one batch
    model.check()
    assert (model.total, model.per_tag) == (1, {"new": 1})


def test_events_of_unknown_flows_count_nothing() -> None:
    model = DictModel()
    model.apply(created(A, "a", "db"))
    model.apply(updated(C, "db", "x"), deleted(C, "c"), deleted(B, "b"))
    model.check()
    assert (model.total, model.per_tag) == (1, {"db": 1})


def test_every_batch_with_an_event_writes_the_flow_count_once() -> None:
    model = DictModel()
    kinds = model.apply(created(A, "a"), deleted(A, "a"))
    assert kinds.count("count_flows") == 1 and "count_tags" not in kinds
    assert model.apply() == []  # no event: no write at all


def test_the_deltas_sum_per_tag() -> None:
    counts = CountDeltas()
    counts.created(["a", "a", "b"])
    counts.retagged(["a", "b"], ["b", "c", "c"])
    counts.deleted(["c"])
    assert counts.writes() == [
        ("count_flows", [(0,)]),
        ("count_tags", [("b", 1)]),
    ]


def test_random_histories_in_random_batches_keep_the_counts_of_a_recount() -> None:
    pick = random.Random(12)
    for _ in range(30):
        model, alive, number = DictModel(), {}, 0
        for _ in range(pick.randrange(1, 12)):
            batch = []
            for _ in range(pick.randrange(0, 8)):
                tags = pick.choices(["a", "b", "c", ""], k=pick.randrange(4))
                choice = pick.random()
                if choice < 0.4 or not alive:
                    number += 1
                    flow_id = f"00000000-0000-4000-8000-{number:012d}"
                    alive[flow_id] = f"f{number}"
                    batch.append(created(flow_id, alive[flow_id], *tags))
                elif choice < 0.7:
                    batch.append(updated(pick.choice(list(alive)), *tags))
                else:
                    flow_id = pick.choice(list(alive))
                    batch.append(deleted(flow_id, alive.pop(flow_id)))
            model.apply(*batch)
            model.check()
