"""Fault injection for the crash tests; off unless its environment variable is set.

`FLOWS_FAULT_KILL_IN_PROJECTOR_BATCH=N`: the process kills itself with SIGKILL when the projector,
inside the transaction of a batch that has written at least two flow rows, moves the checkpoint
to a position >= N — the rows are written, the commit never comes. This is the worst moment for
a crash of the read side; tests/integration/test_faults.py restarts the service afterwards and
proves the read model still equals a rebuild (no event applied twice, none skipped).

`flows serve` installs it (services/serve.py); nothing else reads the variable.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import Callable, Mapping
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.pool import Pool
from sqlalchemy.util import await_only

__all__ = ["KILL_IN_PROJECTOR_BATCH", "install_from_env"]

log = logging.getLogger(__name__)

KILL_IN_PROJECTOR_BATCH = "FLOWS_FAULT_KILL_IN_PROJECTOR_BATCH"
_CHECKPOINT_MOVE = re.compile(r'UPDATE "?projection_checkpoint"? SET position = (\d+)', re.I)


def install_from_env(environ: Mapping[str, str] | None = None) -> None:
    raw = (os.environ if environ is None else environ).get(KILL_IN_PROJECTOR_BATCH)
    if not raw:
        return
    threshold = int(raw)
    log.warning(
        "fault injection on (%s=%d): this process will SIGKILL itself inside a projector batch",
        KILL_IN_PROJECTOR_BATCH,
        threshold,
    )

    # The projector writes through the SQLite driver's own connection (projections/
    # fold_sqlite.py), past SQLAlchemy's statement events, so every SQLite connection the
    # process opens gets a trace callback instead: SQLite hands it each statement as run,
    # with its values expanded, in the order the transaction runs them.
    @event.listens_for(Pool, "connect")
    def connected(dbapi_connection: Any, _record: Any) -> None:
        driver = getattr(dbapi_connection, "_connection", None)
        if isinstance(driver, aiosqlite.Connection):
            await_only(driver.set_trace_callback(_killer(threshold)))


def _killer(threshold: int) -> Callable[[str], None]:
    """A trace callback that kills the process when a transaction that has written two or more
    flow rows moves the checkpoint to `threshold` or beyond, before its commit."""
    writes = 0

    def traced(statement: str) -> None:
        nonlocal writes
        head = statement.lstrip()[:32].upper()
        if head.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            writes = 0
        elif head.startswith(('INSERT INTO "FLOW" ', "INSERT INTO FLOW ")):
            # A multi-row insert: one more row per "), (" (enough to tell one row from two).
            writes += 1 + statement.count("), (")
        elif head.startswith(('UPDATE "FLOW" ', "UPDATE FLOW ")):
            writes += 1
        elif (moved := _CHECKPOINT_MOVE.match(statement.lstrip())) is not None:
            position = int(moved.group(1))
            if writes >= 2 and position >= threshold:
                log.warning("fault injection: SIGKILL before committing checkpoint %d", position)
                os.kill(os.getpid(), signal.SIGKILL)

    return traced
