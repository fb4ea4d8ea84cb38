"""Text for people: flows and events as aligned tables or `key: value` records, errors as lines.

Pure functions from reply bodies (parsed JSON) to strings; the CLI only prints them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from events import jsoncodec

__all__ = [
    "cell",
    "error_message",
    "events_table",
    "flow_record",
    "flows_table",
    "json_text",
    "table",
]

FLOW_COLUMNS = ("id", "name", "tags", "labels", "created", "updated")
EVENT_COLUMNS = ("position", "type", "occurred", "data")
_FRACTION = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d+(Z|[+-]\d\d:\d\d)$")


def json_text(value: Any) -> str:
    """Compact JSON, as the service sent it (key order kept)."""
    return jsoncodec.dumps(value).decode()


def cell(value: Any) -> str:
    """One value on one line: lists comma-joined, objects as k=v, control characters escaped."""
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{_escape(str(key))}={_scalar(item)}" for key, item in value.items())
    return _scalar(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell (by display width); no trailing spaces."""
    widths = [
        max([_width(column), *(_width(row[i]) for row in rows)]) for i, column in enumerate(columns)
    ]
    lines = []
    for row in [list(columns), *rows]:
        padded = (
            text + " " * (width - _width(text)) for text, width in zip(row, widths, strict=True)
        )
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def flows_table(flows: Sequence[Mapping[str, Any]]) -> str:
    if not flows:
        return "(no flows)"
    show = {"created": _brief_time, "updated": _brief_time}
    rows = [[show.get(column, cell)(flow.get(column)) for column in FLOW_COLUMNS] for flow in flows]
    return table(FLOW_COLUMNS, rows)


def events_table(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return "(no events)"
    rows = [
        [
            cell(event.get("position")),
            cell(event.get("type")),
            cell(event.get("occurred")),
            json_text(event.get("data")),
        ]
        for event in events
    ]
    return table(EVENT_COLUMNS, rows)


def flow_record(flow: Mapping[str, Any]) -> str:
    """`key: value` lines in the reply's key order, values aligned."""
    width = max((_width(str(key)) for key in flow), default=0) + 1
    return "\n".join(f"{key + ':':<{width}} {cell(value)}".rstrip() for key, value in flow.items())


def error_message(status: int, body: Any) -> str:
    """Prefect's error body for people: the detail, or each validation error's loc and msg."""
    if isinstance(body, dict) and isinstance(body.get("exception_detail"), list):
        lines = [f"{body.get('exception_message') or 'Invalid request.'} ({status})"]
        for error in body["exception_detail"]:
            if isinstance(error, dict):
                lines.append(f"  {_location(error.get('loc'))}: {error.get('msg', 'invalid')}")
        return "\n".join(lines)
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        if status == 503:  # the contract: nothing is half-done
            return f"service unavailable (503): {body['detail']}; nothing was half-done, retry"
        return f"{body['detail']} ({status})"
    if body is None:
        return f"the service answered {status} with no detail"
    return f"the service answered {status}: {json_text(body)}"


def _location(loc: Any) -> str:
    """`["body", "labels", "k"]` -> `labels.k`: every loc starts with "body"."""
    parts = [str(part) for part in loc] if isinstance(loc, list) else []
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A string that would read back as a number or boolean is quoted, so `k="3"` != `k=3`.
        return json_text(value) if _looks_typed(value) else _escape(value)
    if isinstance(value, int | float):
        return json_text(value)
    return _escape(json_text(value))


def _looks_typed(text: str) -> bool:
    try:
        return not isinstance(orjson.loads(text), str)
    except orjson.JSONDecodeError:
        return False


def _brief_time(value: Any) -> str:
    """Timestamps in tables to the second: `2024-05-01T12:00:03.441494Z` -> `...:03Z`."""
    if isinstance(value, str) and (match := _FRACTION.match(value)):
        return match.group(1) + match.group(2)
    return cell(value)


def _escape(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _width(text: str) -> int:
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )
