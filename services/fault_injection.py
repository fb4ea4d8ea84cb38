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
import signal
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["KILL_IN_PROJECTOR_BATCH", "install_from_env"]

log = logging.getLogger(__name__)

KILL_IN_PROJECTOR_BATCH = "FLOWS_FAULT_KILL_IN_PROJECTOR_BATCH"
_WRITES = "flows_fault_flow_writes"


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

    # Every engine of the process (SQLAlchemy's async engines run on sync Engine objects).
    @event.listens_for(Engine, "before_cursor_execute")
    def before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        head = statement.lstrip().upper()
        if head.startswith(("INSERT INTO FLOW ", "UPDATE FLOW ")):
            conn.info[_WRITES] = conn.info.get(_WRITES, 0) + (len(parameters) if many else 1)
        elif head.startswith("UPDATE PROJECTION_CHECKPOINT"):
            position = next(v for v in parameters if isinstance(v, int))
            if conn.info.get(_WRITES, 0) >= 2 and position >= threshold:
                log.warning("fault injection: SIGKILL before committing checkpoint %d", position)
                os.kill(os.getpid(), signal.SIGKILL)

    @event.listens_for(Engine, "commit")
    @event.listens_for(Engine, "rollback")
    def ended(conn: Any) -> None:
        conn.info.pop(_WRITES, None)
