"""Creating the read model's schema once its database accepts connections.

A PostgreSQL server that is not listening yet, still starting ("the database system is starting
up") or out of connection slots is waited out (services/startup.py). Refused credentials and a
database that does not exist are settings to fix: they stop start-up at once, saying so.
Schema creation itself is safe with any number of instances at once (projections/store.py).
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.store import create_schema
from services.settings import Settings
from services.startup import StartupFailed, wait_for

__all__ = ["create_schema_when_ready", "diagnose_database"]

# SQLSTATE classes and codes (PostgreSQL appendix A) worth waiting out.
_WAIT_CLASSES = ("08",)  # connection exceptions
_WAIT_CODES = {"57P03", "53300"}  # cannot_connect_now (starting up), too_many_connections
# Never worth waiting out: the settings must change.
_REFUSED_CLASSES = {"28": "refused the credentials", "3D": "has no such database"}


async def create_schema_when_ready(engine: AsyncEngine, settings: Settings) -> None:
    where = make_url(settings.resolved_database_url).render_as_string(hide_password=True)

    async def diagnose(error: Exception) -> str | None:
        return await diagnose_database(error, where)

    await wait_for(
        "the read-model database",
        lambda: create_schema(engine),
        diagnose,
        settings.startup_timeout_s,
    )


async def diagnose_database(error: Exception, where: str) -> str | None:
    """Why `error` is worth waiting out, or None; raises StartupFailed for a refusal."""
    if isinstance(error, OSError | TimeoutError):  # asyncpg's own: refused, no such host yet
        return f"nothing accepts connections at {where} yet ({error or type(error).__name__})"
    if not isinstance(error, DBAPIError):
        return None
    state = str(getattr(error.orig, "sqlstate", "") or "")
    detail = str(error.orig).strip() or type(error.orig).__name__
    refusal = _REFUSED_CLASSES.get(state[:2])
    if refusal is not None:
        raise StartupFailed(
            f"the read-model database at {where} {refusal}: {detail}; check "
            "FLOWS_DATABASE_URL / --database-url"
        ) from error
    if state[:2] in _WAIT_CLASSES or state in _WAIT_CODES:
        return f"the database at {where} is not ready ({detail})"
    if "database is locked" in detail:  # SQLite: another process holds it past busy_timeout
        return f"the SQLite database {where} is locked by another process"
    return None
