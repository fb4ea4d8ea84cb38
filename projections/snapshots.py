"""Read-model snapshots on disk: complete SQLite models of the log as of a position, one file
each, so an as-of answer replays only from the nearest snapshot at or below its position.

A snapshot is a copy of a scratch model (projections/scratch.py) taken between two of its
transactions, after it applied exactly the log up to the position in its name: it holds what
the live model held there, because both were folded by the projector's `apply_messages`.

Disk is bounded by `max_bytes`: past it, snapshots are thinned evenly (the one whose removal
leaves the smallest gap goes first, never the newest), so old history stays answerable at a
longer replay rather than dropping out.
"""

from __future__ import annotations

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

    def positions(self) -> list[int]:
        """The positions snapshots exist for, ascending."""
        found = []
        for path in self.directory.glob(f"at-*{_SUFFIX}"):
            digits = path.name[3 : -len(_SUFFIX)]
            if digits.isdigit():
                found.append(int(digits))
        return sorted(found)

    def path(self, position: int) -> Path:
        return self.directory / f"at-{position:012d}{_SUFFIX}"

    def nearest(self, position: int) -> int:
        """The highest snapshot position at or below `position` (0: none, start empty)."""
        below = [p for p in self.positions() if p <= position]
        return below[-1] if below else 0

    def newest(self) -> int:
        found = self.positions()
        return found[-1] if found else 0

    def add(self, model_file: Path, position: int) -> None:
        """Copy `model_file` (a model with no transaction open) in as the snapshot at
        `position`, atomically (a reader sees the whole file or none), then thin to fit."""
        temporary = self.directory / f"at-{position:012d}-{os.getpid()}.tmp"
        shutil.copyfile(model_file, temporary)
        os.replace(temporary, self.path(position))
        self.thin()

    def clear(self) -> None:
        """Forget every snapshot (the log they were taken of is not the log there now)."""
        for position in self.positions():
            self.path(position).unlink(missing_ok=True)

    def total_bytes(self) -> int:
        return sum(_size(self.path(p)) for p in self.positions())

    def thin(self) -> None:
        positions = self.positions()
        sizes = {p: _size(self.path(p)) for p in positions}
        total = sum(sizes.values())
        while total > self._max_bytes and len(positions) > 1:
            # Removing positions[i] merges the gaps on both sides: remove the smallest merge.
            def merged(i: int) -> int:
                before = positions[i - 1] if i else 0
                return positions[i + 1] - before

            victim = positions.pop(min(range(len(positions) - 1), key=merged))
            self.path(victim).unlink(missing_ok=True)
            total -= sizes[victim]


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
