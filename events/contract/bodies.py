"""Request-body validation with Prefect's error shapes.

Prefect (FastAPI) answers a body that fails validation with 422 and pydantic's `errors()` list,
every `loc` starting with "body". These helpers produce exactly that from raw NATS payloads, so
each request schema only declares its fields.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from events import jsoncodec
from events.contract.errors import InvalidRequest, UnparsableBody

__all__ = ["load_json_body", "prefect_errors", "validate_body"]

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

_JSON_PRIMITIVES = (str, int, float, bool, type(None))
# Deeper bodies are refused with FastAPI's 400. Prefect itself validates up to ~900 levels (its
# parser's stack) and answers 400 beyond; the service stops at 250 because every answer must
# stay writable: a 422 echoes the body three levels down in its envelope, and orjson writes at
# most 254 levels.
MAX_DEPTH = 250
_UNREAD: Any = object()


def load_json_body(raw: bytes) -> Any:
    """Parse a request payload as Prefect (Starlette's `json.loads` of the bytes) does.

    Only an *empty* payload means `{}` (the contract). Malformed JSON gives Prefect's
    `json_invalid` error: `loc ["body", <char offset>]` and the decoded text as `request_body`.
    Text Python cannot decode (invalid UTF-8, broken UTF-16/32) gets FastAPI's plain 400, and so
    does a body the service will not carry: one nested past `MAX_DEPTH` or holding a lone
    UTF-16 surrogate (Prefect fails on that with a 500). orjson reads the usual body; the
    standard library takes over wherever orjson would refuse or round what Python accepts
    (a BOM, UTF-16/32, NaN, integers beyond 64 bits, whitespace only), so the answer is the
    same either way.
    """
    if not raw:
        return {}
    value = _load_with_orjson(raw)
    if value is _UNREAD:
        value = _load_as_prefect(raw)
        if jsoncodec.has_lone_surrogate(value):
            raise UnparsableBody()
    # Only a body with many brackets can be deep: the walk is skipped for the usual ones.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(value):
        raise UnparsableBody()
    return value


def _load_with_orjson(raw: bytes) -> Any:
    """The body as orjson reads it, or `_UNREAD` where Python's parser must decide."""
    if jsoncodec.may_be_inexact_in_orjson(raw):
        return _UNREAD
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNREAD


def _load_as_prefect(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {
            "type": "json_invalid",
            "loc": ["body", exc.pos],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        raise InvalidRequest([error], exc.doc) from None
    except (ValueError, RecursionError):
        # FastAPI answers every other failure of the parser (UnicodeDecodeError, an integer of
        # more than 4300 digits, nesting past the stack) with its plain 400.
        raise UnparsableBody() from None


def _too_deep(value: Any) -> bool:
    return any(
        depth > MAX_DEPTH and isinstance(item, dict | list) for item, depth in jsoncodec.walk(value)
    )


def _jsonable(value: Any) -> Any:
    """A value as FastAPI's `jsonable_encoder` writes it into Prefect's 422."""
    if isinstance(value, _JSON_PRIMITIVES):
        return value
    if isinstance(value, BaseException):
        # A validator's ValueError in `ctx.error`: the encoder writes an object's attributes,
        # and an exception has none, so Prefect sends `{}`.
        return {}
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
