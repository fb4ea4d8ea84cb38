"""The parts a request needs, once the service has started: what the route table's handlers
reach through `Service.started()` (services/bootstrap.py). Before start-up completes (or after
it stops) there are none, and a request gets 503 "the flows service is starting"."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from events.contract.errors import ServiceUnavailable
from events.writer import FlowWriter
from projections.as_of import AsOfModels
from projections.sqlite_reads import SQLiteDocuments
from services.audit_reader import AuditReader
from services.consistency import ReadPositions

__all__ = ["NotStarted", "Started"]


class NotStarted(ServiceUnavailable):
    def __init__(self) -> None:
        super().__init__("the flows service is starting")


@dataclass(frozen=True, slots=True)
class Started:
    writer: FlowWriter
    engine: AsyncEngine  # the live read model
    positions: ReadPositions
    audit: AuditReader
    as_of: AsOfModels
    # The live SQLite model's documents read in place (None on PostgreSQL).
    documents: SQLiteDocuments | None = None
