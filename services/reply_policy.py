"""Where the service may send a reply, and what it does with a request that names anywhere else.

A request's reply subject is the sender's to choose, and the service publishes its reply there
with its own permissions. Unchecked, a client could make the service append a reply to the
event log (`P.events.<id>`, which nothing may change afterwards), overwrite a name's claim
(`P.names.<digest>`), send a JetStream API request of the client's making (`$JS.API.…`), or feed
the service its own requests. So a reply subject must start with one of the configured reply
prefixes (`_INBOX.` by default: nats-py's, nats.go's, nats.js's and the NATS CLI's inboxes,
private per-user prefixes `_INBOX.<user>.` included), and must never be one of the service's own
subjects or a `$` subject, whatever the prefixes say.

An allow-list rather than a deny-list, because:
- it fails closed: a subject the service does not know of (another application's in the same
  account, a bookkeeping subject added later, a KV bucket) is refused, not written to;
- it is what nats-server itself can enforce: the shipped permission layout lets the responding
  user publish to `_INBOX.>` only. `allow_responses` cannot do it: it lets a user answer on any
  reply subject it received, and its deny list does not override that (nats-server's
  `pubAllowedFullCheck` re-allows a denied subject that is a tracked reply);
- a deny-list is still kept beneath it (the service's own subjects, `$`), so that a reply prefix
  configured too wide cannot reopen the hole; settings refuse such a prefix at start-up too.

A refused request is not executed (a command must not take effect when its reply could not be
sent honestly), gets no reply, is counted, and is logged at most once per interval with the
count of those suppressed, so a flood cannot become a log storm.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import orjson

from events.contract.subjects import Subjects

__all__ = ["RefusedReplies", "ReplyPolicy"]

log = logging.getLogger(__name__)

# A subject one can publish to: tokens of one or more characters, none a wildcard, no space
# anywhere (`\s` is what str.isspace() calls space). One compiled match per request, not a
# loop over tokens and characters: this runs before every request.
_PUBLISHABLE = re.compile(r"[^.\s*>]+(?:\.[^.\s*>]+)*")


class ReplyPolicy:
    """Says whether a reply subject is one the service may publish to."""

    def __init__(self, subjects: Subjects, reply_prefixes: Sequence[str]) -> None:
        self._allowed = tuple(reply_prefixes)
        prefix = subjects.prefix
        # Never, whatever the prefixes: the log's subjects and the service's request subjects.
        self._own = tuple(
            f"{prefix}.{kind}." for kind in ("events", "names", "replies", "cmd", "query", "audit")
        )

    def refusal(self, reply: str) -> str | None:
        """Why the service must not answer on `reply`, or None when it may (an empty reply
        subject needs no answer and is never refused)."""
        if not reply:
            return None
        if _PUBLISHABLE.fullmatch(reply) is None:
            return "it is not a subject one can publish to (empty token, wildcard or space)"
        if reply.startswith("$"):
            return "it is a `$` subject (JetStream API or system)"
        if reply.startswith(self._own):
            return "it is one of the service's own log or request subjects"
        if not reply.startswith(self._allowed):
            allowed = ", ".join(self._allowed)
            return f"it does not start with a reply prefix ({allowed}; FLOWS_REPLY_PREFIXES)"
        return None


class RefusedReplies:
    """Counts refused requests and logs them, at most one line per `interval_s` (the first at
    once, later ones summarised with how many were not logged)."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_s
        self._clock = clock
        self._next_log = float("-inf")
        self._unlogged = 0
        self.by_subject: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_subject.values())

    def record(
        self, subject: str, reply: str, reason: str, headers: Mapping[str, str] | None
    ) -> None:
        self.by_subject[subject] += 1
        now = self._clock()
        if now < self._next_log:
            self._unlogged += 1
            return
        self._next_log = now + self._interval
        unlogged, self._unlogged = self._unlogged, 0
        log.warning(
            "refused a request on %s without executing it: its reply subject %r is not one the "
            "service answers on, because %s; sender: %s. Clients must use an inbox "
            "(_INBOX.…) as reply subject.%s",
            subject,
            reply[:200],
            reason,
            _sender(headers),
            f" ({unlogged} more refused since the last such line)" if unlogged else "",
        )


def _sender(headers: Mapping[str, str] | None) -> str:
    """Who sent the request, as far as NATS says: nats-server adds `Nats-Request-Info` (the
    connection's account, user and name) to requests that cross accounts through a service
    import; within one account a message does not name its sender."""
    raw = (headers or {}).get("Nats-Request-Info")
    if raw:
        try:
            info = orjson.loads(raw)
        except orjson.JSONDecodeError:
            info = None
        if isinstance(info, dict):
            shown = {key: info[key] for key in ("acc", "user", "name", "host") if key in info}
            if shown:
                # Set by nats-server across accounts; within one a client could write it.
                named = ", ".join(f"{key}={value!r}" for key, value in shown.items())
                return f"{named} (its Nats-Request-Info header)"
    return (
        "not named by NATS (same account; `nats server report connections` lists who is "
        "connected, and a private inbox prefix _INBOX.<user> names the user)"
    )
