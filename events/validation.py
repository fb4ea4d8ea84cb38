"""Request-body validation with Prefect's error shapes.

Prefect (FastAPI) answers a body that fails validation with 422 and pydantic's `errors()` list,
every `loc` starting with "body". These helpers produce exactly that from raw NATS payloads, so
each request schema only declares its fields.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from events.errors import InvalidRequest

__all__ = ["load_json_body", "prefect_errors", "validate_body"]

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

_JSON_PRIMITIVES = (str, int, float, bool, type(None))
# Deeper bodies are refused: nothing in the contract nests past ~6 levels, while validation,
# error replies (which echo the body) and orjson (255 levels) would fail on a deep one.
MAX_DEPTH = 64
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def load_json_body(raw: bytes) -> Any:
    """Parse a request payload; an empty payload means `{}` (the contract).

    Malformed JSON gives Prefect's `json_invalid` error: `loc ["body", <char offset>]` and the
    raw text as `request_body`.
    """
    if not raw or not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", exc.start],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Invalid UTF-8"},
                }
            ],
            raw.decode("utf-8", errors="replace"),
        ) from None
    try:
        value = json.loads(text, parse_int=_int64)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", exc.pos],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ],
            text,
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except _OutOfRange as exc:
        raise InvalidRequest(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 0],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": f"integer {exc.text[:40]} is outside the 64-bit range"},
                }
            ],
            None,
        ) from None
    # Only a body with many brackets can be deep: the walk is skipped for the usual ones.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise _too_deep()
    return value


class _OutOfRange(ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _int64(text: str) -> int:
    """JSON integers as signed 64-bit values: what SQL parameters, orjson and every reply
    can carry (a larger one would fail far from here, after the request was accepted)."""
    try:
        value = int(text)
    except ValueError:  # more digits than Python converts
        raise _OutOfRange(text) from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _OutOfRange(text)
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON nests deeper than `limit` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        [
            {
                "type": "json_invalid",
                "loc": ["body", 0],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": f"nested more than {MAX_DEPTH} levels deep"},
            }
        ],
        None,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, _JSON_PRIMITIVES):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def prefect_errors(exc: ValidationError, prefix: tuple[str | int, ...] = ("body",)) -> list[Any]:
    """pydantic errors as Prefect serialises them: no `url`, `loc` prefixed, JSON-safe ctx."""
    errors: list[Any] = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": error["type"],
            "loc": [*prefix, *error["loc"]],
            "msg": error["msg"],
            "input": _jsonable(error.get("input")),
        }
        if "ctx" in error:
            item["ctx"] = _jsonable(error["ctx"])
        errors.append(item)
    return errors


def validate_body(
    schema: type[ModelT] | TypeAdapter[T], data: Any, prefix: tuple[str | int, ...] = ("body",)
) -> Any:
    """Validate parsed JSON against a model or adapter; failures become `InvalidRequest`."""
    try:
        if isinstance(schema, TypeAdapter):
            return schema.validate_python(data)
        return schema.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(prefect_errors(exc, prefix), data) from None
