"""On SQLite a `like_` criterion is `name LIKE pattern`, where Prefect writes `lower(name) LIKE
lower(pattern)` (projections/filter_sql.py): the two must select the same names, whatever
they hold."""

from __future__ import annotations

import itertools
import random
import sqlite3

NAMES = ["Seed-01", "seed-01", "SEED", "ÉTÉ", "été", "Straße", "STRASSE", "ǅ", "ǆ", "İ", "i",
         "a%b", "a_b", "aXb", "nul\x00name", "", "\uff21\uff22", "\uff41\uff42", "Ω", "ω", "k", "K"]  # fmt: skip
PATTERNS = ["seed", "SEED", "été", "ÉTÉ", "straße", "%", "_", "a%b", "a_b", "nul", "\x00",
            "ǆ", "i", "İ", "ab", "\uff41\uff42", "ω", "K"]  # fmt: skip


def matched(db: sqlite3.Connection, condition: str, pattern: str) -> list[str]:
    rows = db.execute(f"SELECT name FROM t WHERE {condition} ORDER BY rowid", (f"%{pattern}%",))
    return [row[0] for row in rows]


def test_like_selects_what_lower_like_lower_selects() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (name TEXT)")
    pick = random.Random(5)
    generated = ["".join(pick.choices("aAbBéÉ_%ßẞ\x00 ", k=pick.randrange(6))) for _ in range(300)]
    db.executemany("INSERT INTO t VALUES (?)", [(name,) for name in NAMES + generated])
    for pattern in itertools.chain(PATTERNS, generated[:60]):
        ours = matched(db, "name LIKE ?", pattern)
        assert ours == matched(db, "lower(name) LIKE lower(?)", pattern), repr(pattern)
    assert matched(db, "name LIKE ?", "seed") == ["Seed-01", "seed-01", "SEED"]  # ASCII folds
    assert matched(db, "name LIKE ?", "été") == ["été"]  # other letters do not, as lower()
