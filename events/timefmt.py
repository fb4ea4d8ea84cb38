"""Timestamps as Prefect writes them: UTC, ISO 8601 with `Z`, six-digit fraction omitted at zero."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_datetime", "parse_datetime", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_datetime(value: datetime) -> str:
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def parse_datetime(text: str) -> datetime:
    """Parse an ISO 8601 timestamp; a naive one is taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
