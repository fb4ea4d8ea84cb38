"""Every NATS subject the service uses, derived from the one configurable prefix.

The event log stream holds three kinds of message:
- `P.events.<flow_id>`: the events (the contract's log; audit readers filter on `P.events.>`);
- `P.names.<digest>`: name markers, the log's own record of which live flow holds a name, appended
  in the same atomic batch as the event that claims or frees it;
- `P.replies.<digest>`: the stored reply of a command sent with `Nats-Msg-Id`, appended in the same
  atomic batch as the command's events, so a retry can never apply a command twice.
Names and command ids are arbitrary text, so they enter subjects as digests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["AUDITS", "COMMANDS", "HEALTH", "QUERIES", "Subjects"]

COMMANDS = ("create", "update", "delete", "bulk_delete")
QUERIES = ("read", "read_by_name", "filter", "count", "paginate")
AUDITS = ("history", "events")
# Answered beside the audit subjects (`P.audit.stats`) by services/stats.py.
HEALTH = ("stats",)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Subjects:
    prefix: str = "flows"

    # -- the log ---------------------------------------------------------------------------
    @property
    def events_prefix(self) -> str:
        return f"{self.prefix}.events."

    @property
    def all_events(self) -> str:
        return f"{self.prefix}.events.*"

    @property
    def stream_subjects(self) -> list[str]:
        return [f"{self.prefix}.events.>", f"{self.prefix}.names.>", f"{self.prefix}.replies.>"]

    def event(self, flow_id: str) -> str:
        return f"{self.prefix}.events.{flow_id}"

    def name(self, name: str) -> str:
        return f"{self.prefix}.names.{_digest(name)}"

    def reply(self, command_id: str) -> str:
        return f"{self.prefix}.replies.{_digest(command_id)}"

    def flow_id_of(self, subject: str) -> str | None:
        """The flow id of an event subject, or None for any other message of the stream."""
        if not subject.startswith(self.events_prefix):
            return None
        rest = subject[len(self.events_prefix) :]
        return rest if rest and "." not in rest else None

    # -- request-reply -----------------------------------------------------------------------
    def command(self, operation: str) -> str:
        return f"{self.prefix}.cmd.{operation}"

    def query(self, operation: str) -> str:
        return f"{self.prefix}.query.{operation}"

    def audit(self, operation: str) -> str:
        return f"{self.prefix}.audit.{operation}"
