"""The tamper-evidence chain of a flow's events.

Every event (schema 2 on) carries in `prev` the SHA-256 of the exact payload bytes of the message
before it on its flow's subject, or null when it is the first. The writer sets it at append time,
under the same optimistic-concurrency guard that makes that message the subject's latest, so the
link names exactly the event it follows. Altering a stored event changes its hash and breaks the
link of the event after it; removing one leaves the next event pointing at a hash that is no
longer its predecessor's; a re-published copy points at the wrong predecessor. `flows verify`
(projections/verify/log_walk.py) walks the links.
"""

from __future__ import annotations

import dataclasses
import hashlib

from events.model import Event

__all__ = ["digest", "link"]


def digest(payload: bytes) -> str:
    """The chain hash of one message: SHA-256 of its exact payload bytes, as lower-case hex."""
    return hashlib.sha256(payload).hexdigest()


def link(event: Event, previous_payload: bytes | None) -> Event:
    """The event, chained after the message its flow's subject holds last (None: no message)."""
    prev = None if previous_payload is None else digest(previous_payload)
    return dataclasses.replace(event, prev=prev)
