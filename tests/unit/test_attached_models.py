"""Model files written through connections kept open: the unqualified tables are the attached
file's, and a failed write leaves the file untouched and the connection fit for the next one."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from projections.attached_models import AttachedModels
from projections.scratch import create_scratch_model


def versions(path: Path) -> list[tuple[int, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT id, version FROM read_model_version").fetchall()
    finally:
        db.close()


async def test_a_failed_write_rolls_back_and_the_connection_writes_the_next_file(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.sqlite"
    await (await create_scratch_model(empty)).dispose()
    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    shutil.copyfile(empty, first)
    shutil.copyfile(empty, second)
    recorded = versions(empty)
    assert recorded
    models = AttachedModels(connections=1)  # the next write must reuse the failed one's
    try:
        with pytest.raises(RuntimeError):
            async with models.writing(first) as conn, conn.begin():
                await conn.exec_driver_sql("DELETE FROM read_model_version")
                raise RuntimeError("a replay failed")
        async with models.writing(second) as conn, conn.begin():
            await conn.exec_driver_sql("UPDATE read_model_version SET version = version + 1")
    finally:
        await models.close()
    assert versions(first) == recorded
    assert versions(second) == [(id_, version + 1) for id_, version in recorded]
