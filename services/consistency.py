"""Which log position a query must wait for before it reads the model, and the wait itself.

- Linearizable (the default): the log's end as JetStream reports it at the query's arrival,
  so a query sees every command acknowledged before it was sent, by any instance (etcd's "read
  index": one look-up serves every query that arrived while it was under way,
  projections/log_end.py). `Flows-Consistency: eventual` skips the look-up.
- Always: the client's `Flows-Min-Position` (its session's own writes), and anything this
  instance has answered a command with (read-your-writes on one instance).
A client's position beyond the log's end was handed out by no command, and waiting for it could
only run out: it is refused at once (422). The end it is compared with is never below a position
this instance knows to exist (LogEnd asks again, then answers 503): a server answering with stale
state neither moves a linearizable read's index back nor has a position that exists refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from events.contract import headers as h
from events.contract.errors import ReadModelBehind
from projections.log_end import LogEnd
from projections.position_watcher import PositionWatcher

__all__ = ["DEFAULT_WAIT_MS", "ReadPositions"]

DEFAULT_WAIT_MS = 5000
MAX_WAIT_MS = 60_000


class ReadPositions:
    def __init__(self, watcher: PositionWatcher, log_end: LogEnd, start: int) -> None:
        self._watcher = watcher
        self._log_end = log_end
        # Highest position this instance has answered a command with (or the log's end at
        # start-up, so nothing stale is served while the projector catches up).
        self.answered = start

    @property
    def applied(self) -> int:
        """How far the read model has applied the log."""
        return self._watcher.position

    def answered_command(self, position: int) -> None:
        self.answered = max(self.answered, position)
        self._log_end.saw(position)

    async def wanted(self, headers: Mapping[str, str]) -> int:
        """The position a query with these headers waits for."""
        asked = h.non_negative_int(headers, h.MIN_POSITION, 0)
        linearizable = h.consistency(headers) == "linearizable"
        self._log_end.saw(self._watcher.position)
        wanted = max(asked, self.answered)
        if linearizable or asked > self._log_end.known:
            end = await self._log_end.fresh()
            if asked > end:
                raise h.header_error(
                    h.MIN_POSITION,
                    "less_than_equal",
                    f"Input should be less than or equal to {end}, the event log's last "
                    "position (use a Flows-Position a command reply carried)",
                    headers[h.MIN_POSITION],
                    le=end,
                )
            if linearizable:
                wanted = max(wanted, end)
        return wanted

    @staticmethod
    def wait_ms(headers: Mapping[str, str]) -> int:
        return min(h.non_negative_int(headers, h.WAIT_MS, DEFAULT_WAIT_MS), MAX_WAIT_MS)

    async def wait_for(self, position: int, wait_ms: int) -> None:
        if not await self._watcher.wait_for(position, wait_ms / 1000):
            raise ReadModelBehind(
                f"the read model has applied the log up to position {self._watcher.position}, "
                f"not yet {position}, after waiting {wait_ms} ms; retry, or raise Flows-Wait-Ms"
            )
