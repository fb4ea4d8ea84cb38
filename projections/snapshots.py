"""Read-model snapshots on disk: complete SQLite models of the log as of a position, one file
each, so an as-of answer replays only from the nearest snapshot at or below its position.

A snapshot is a copy of a scratch model (projections/scratch.py) taken between two of its
transactions, after it applied exactly the log up to the position in its name: it holds what
the live model held there, because both were folded by the projector's `apply_messages`.

Disk is bounded by `max_bytes`: past it, snapshots are thinned evenly (the one whose removal
leaves the smallest gap goes first, never the newest), so old history stays answerable at a
longer replay rather than dropping out.

The store keeps the positions (and sizes) of its snapshots in memory: the directory is read
once, when the store opens, and every as-of answer asks for the nearest snapshot, which must
not cost a directory scan (~1 ms per thousand snapshots, on the worker's niced CPU). A worker
still exiting may add or thin snapshots in the same directory meanwhile: a snapshot this store
does not know of only lengthens a replay, and one gone from under it is forgotten (`forget`).
"""

from __future__ import annotations

import bisect
import os
import shutil
from pathlib import Path

__all__ = ["SnapshotStore"]

_SUFFIX = ".sqlite"


class SnapshotStore:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*-*.*"):  # a copy or a model a crash left behind
            if leftover.suffix in (".tmp", ".work") and not _alive(leftover.stem.split("-")[-1]):
                leftover.unlink(missing_ok=True)
        self._sizes = {position: _size(self.path(position)) for position in _scan(directory)}
        self._positions = sorted(self._sizes)

    def positions(self) -> list[int]:
        """The positions snapshots exist for, ascending."""
        return list(self._positions)

    def path(self, position: int) -> Path:
        return self.directory / f"at-{position:012d}{_SUFFIX}"

    def nearest(self, position: int) -> int:
        """The highest snapshot position at or below `position` (0: none, start empty)."""
        index = bisect.bisect_right(self._positions, position)
        return self._positions[index - 1] if index else 0

    def newest(self) -> int:
        return self._positions[-1] if self._positions else 0

    def add(self, model_file: Path, position: int) -> None:
        """Copy `model_file` (a model with no transaction open) in as the snapshot at
        `position`, atomically (a reader sees the whole file or none), then thin to fit."""
        temporary = self.directory / f"at-{position:012d}-{os.getpid()}.tmp"
        shutil.copyfile(model_file, temporary)
        os.replace(temporary, self.path(position))
        if position not in self._sizes:
            bisect.insort(self._positions, position)
        self._sizes[position] = _size(self.path(position))
        self.thin()

    def forget(self, position: int) -> None:
        """Drop a snapshot found gone from disk (thinned by another process) from the index."""
        if self._sizes.pop(position, None) is not None:
            self._positions.remove(position)

    def clear(self) -> None:
        """Forget every snapshot (the log they were taken of is not the log there now)."""
        for position in self.positions():
            self.path(position).unlink(missing_ok=True)
            self.forget(position)

    def total_bytes(self) -> int:
        return sum(self._sizes.values())

    def thin(self) -> None:
        positions = self._positions
        total = self.total_bytes()
        while total > self._max_bytes and len(positions) > 1:
            # Removing positions[i] merges the gaps on both sides: remove the smallest merge.
            def merged(i: int) -> int:
                before = positions[i - 1] if i else 0
                return positions[i + 1] - before

            victim = positions[min(range(len(positions) - 1), key=merged)]
            self.path(victim).unlink(missing_ok=True)
            total -= self._sizes[victim]
            self.forget(victim)


def _scan(directory: Path) -> list[int]:
    """The positions of the snapshot files in `directory`."""
    found = []
    for path in directory.glob(f"at-*{_SUFFIX}"):
        digits = path.name[3 : -len(_SUFFIX)]
        if digits.isdigit():
            found.append(int(digits))
    return found


def _alive(pid: str) -> bool:
    """Whether the process that named a file by its pid still runs."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
