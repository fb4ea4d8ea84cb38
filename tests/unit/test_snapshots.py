"""The snapshot store: atomic adds, the nearest snapshot at or below a position, and thinning
to a disk budget that keeps the newest and spreads the rest evenly."""

from __future__ import annotations

import os
from pathlib import Path

from projections.snapshots import SnapshotStore


def model_file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "model"
    path.write_bytes(b"x" * size)
    return path


def test_nearest_is_the_highest_at_or_below(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "s", 10_000)
    for position in (10, 20, 30):
        store.add(model_file(tmp_path, 10), position)
    assert [store.nearest(p) for p in (0, 9, 10, 19, 20, 35)] == [0, 0, 10, 10, 20, 30]
    assert store.newest() == 30


def test_past_the_budget_snapshots_thin_evenly_and_the_newest_stays(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "s", 450)
    for position in range(10, 110, 10):
        store.add(model_file(tmp_path, 100), position)
    kept = store.positions()
    assert len(kept) == 4 and kept[-1] == 100
    gaps = [b - a for a, b in zip([0, *kept], kept, strict=False)]
    assert max(gaps) <= 40, kept  # evenly: no gap more than twice the ideal 25
    assert store.total_bytes() <= 450


def test_leftovers_of_processes_that_ended_are_removed(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "at-000000000010-999999999.tmp").write_bytes(b"half")  # no such pid
    (tmp_path / "s" / "head-999999999.work").write_bytes(b"model")
    (tmp_path / "s" / f"head-{os.getpid()}.work").write_bytes(b"model")  # its process runs
    store = SnapshotStore(tmp_path / "s", 100)
    assert store.positions() == []
    assert [p.name for p in (tmp_path / "s").iterdir()] == [f"head-{os.getpid()}.work"]


def test_the_index_in_memory_matches_the_directory_after_a_restart(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "s", 450)
    for position in range(10, 110, 10):
        store.add(model_file(tmp_path, 100), position)  # thinned as it goes
    (tmp_path / "s" / "at-notdigits.sqlite").write_bytes(b"not a snapshot")
    reopened = SnapshotStore(tmp_path / "s", 450)
    on_disk = sorted(int(p.name[3:15]) for p in (tmp_path / "s").glob("at-0*.sqlite"))
    assert store.positions() == reopened.positions() == on_disk
    assert store.total_bytes() == reopened.total_bytes() == 100 * len(on_disk)
    assert [reopened.nearest(p) for p in (0, 55, 100, 1000)] == [
        store.nearest(p) for p in (0, 55, 100, 1000)
    ]


def test_a_snapshot_thinned_by_another_process_is_forgotten(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "s", 10_000)
    for position in (10, 20):
        store.add(model_file(tmp_path, 10), position)
    store.path(20).unlink()  # another worker, still exiting, thinned it
    store.forget(20)
    assert store.positions() == [10] and store.nearest(25) == 10 and store.total_bytes() == 10
