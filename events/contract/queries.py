"""Query request bodies → frozen request objects, failing exactly as Prefect's endpoints fail.

Prefect's query endpoints take several *embedded* body parameters (`limit`, `offset`, `flows`,
...), each validated on its own by FastAPI. So this module does not validate one model but
mimics FastAPI's `request_body_to_args`, which fixes the observable details:

* a key that is absent or `null` takes the parameter's default;
* each parameter is validated separately; its errors get `loc ["body", <param>, ...]`, and the
  errors of all parameters are reported together, in signature order;
* a body that is not a JSON object gives one `missing` error (input `null`) per parameter;
* unknown top-level keys are ignored.

`limit` is Prefect's `LimitBody()` *dependency*, which FastAPI resolves before the endpoint's own
parameters: its type errors join the others, but a well-typed limit out of range raises the
plain-`detail` 422 at once, before the other parameters are looked at.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final
from uuid import UUID

from pydantic import Field, TypeAdapter, ValidationError

from events.contract.bodies import prefect_errors
from events.contract.errors import InvalidLimit, InvalidRequest
from events.contract.filters import (
    DeploymentFilter,
    FlowFilter,
    FlowFilters,
    FlowRunFilter,
    FlowSort,
    TaskRunFilter,
    WorkPoolFilter,
)

__all__ = [
    "BULK_DELETE_LIMIT",
    "DEFAULT_LIMIT",
    "BulkDeleteRequest",
    "CountRequest",
    "FilterRequest",
    "PaginateRequest",
    "parse_bulk_delete_request",
    "parse_count_request",
    "parse_filter_request",
    "parse_paginate_request",
    "parse_read_by_name_request",
    "parse_read_request",
    "refuse_unstorable_text",
]

DEFAULT_LIMIT: Final = 200  # Prefect's PREFECT_SERVER_API_DEFAULT_LIMIT default
BULK_DELETE_LIMIT: Final = 50  # Prefect's BULK_OPERATION_LIMIT


@dataclass(frozen=True, slots=True)
class FilterRequest:
    filters: FlowFilters
    limit: int
    offset: int
    sort: FlowSort


@dataclass(frozen=True, slots=True)
class CountRequest:
    filters: FlowFilters


@dataclass(frozen=True, slots=True)
class PaginateRequest:
    filters: FlowFilters
    limit: int
    page: int
    sort: FlowSort

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


@dataclass(frozen=True, slots=True)
class BulkDeleteRequest:
    flows: FlowFilter | None
    limit: int


@dataclass(frozen=True, slots=True)
class _Param:
    """One embedded body parameter: its key, its validator and its default."""

    name: str
    adapter: TypeAdapter[Any]
    default: Any = None


_LIMIT = _Param("limit", TypeAdapter(int))
_OFFSET = _Param("offset", TypeAdapter(Annotated[int, Field(ge=0)]), 0)
_PAGE = _Param("page", TypeAdapter(Annotated[int, Field(ge=1)]), 1)
_SORT = _Param("sort", TypeAdapter(FlowSort), FlowSort.NAME_ASC)
_FILTERS: Final = (
    _Param("flows", TypeAdapter(FlowFilter)),
    _Param("flow_runs", TypeAdapter(FlowRunFilter)),
    _Param("task_runs", TypeAdapter(TaskRunFilter)),
    _Param("deployments", TypeAdapter(DeploymentFilter)),
    _Param("work_pools", TypeAdapter(WorkPoolFilter)),
)
_BULK_FLOWS = _Param("flows", TypeAdapter(FlowFilter))
_BULK_LIMIT = _Param(
    "limit",
    TypeAdapter(Annotated[int, Field(ge=1, le=BULK_DELETE_LIMIT)]),
    BULK_DELETE_LIMIT,
)
_STR = TypeAdapter(str)
_UUID = TypeAdapter(UUID)

# Starlette's `uuid` path convertor: 32 hex digits, each of the four dashes optional.
_STARLETTE_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def _missing(name: str) -> dict[str, Any]:
    # FastAPI's get_missing_field_error: `input` is null, not the body.
    return {"type": "missing", "loc": ["body", name], "msg": "Field required", "input": None}


def _as_object(body: Any, params: tuple[_Param, ...]) -> dict[str, Any]:
    """The body as a dict; `null` is an absent body; any other non-object fails every param."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest([_missing(p.name) for p in params], body)
    return body


def _validate(
    body: dict[str, Any], params: tuple[_Param, ...]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for param in params:
        raw = body.get(param.name)
        if raw is None:
            values[param.name] = param.default
            continue
        try:
            # FastAPI validates with `from_attributes=True`: a non-object filter (at any level)
            # is `model_attributes_type`, not `model_type`.
            values[param.name] = param.adapter.validate_python(raw, from_attributes=True)
        except ValidationError as exc:
            errors.extend(prefect_errors(exc, ("body", param.name)))
    return values, errors


def _limit(body: dict[str, Any], max_limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Prefect's LimitBody: type errors are returned, range errors raised at once.

    Prefect's PREFECT_SERVER_API_DEFAULT_LIMIT is both the default and the maximum.
    """
    values, errors = _validate(body, (_LIMIT,))
    if errors:
        return max_limit, errors
    limit: int | None = values["limit"]
    if limit is None:
        return max_limit, []
    if limit < 0:
        raise InvalidLimit("Invalid limit: must be greater than or equal to 0.")
    if limit > max_limit:
        raise InvalidLimit(f"Invalid limit: must be less than or equal to {max_limit}.")
    return limit, []


def _limited(body: Any, position: _Param, max_limit: int) -> tuple[int, dict[str, Any]]:
    """The body of a listing (filter: `offset`; paginate: `page`): its limit and its values,
    with Prefect's errors in Prefect's order (the limit's first, then the body's in field
    order), all of them in one 422."""
    params = (position, *_FILTERS, _SORT)
    data = _as_object(body, (_LIMIT, *params))
    limit, errors = _limit(data, max_limit)
    values, more = _validate(data, params)
    if errors or more:
        raise InvalidRequest(errors + more, body)
    return limit, values


def _filters(values: dict[str, Any]) -> FlowFilters:
    return FlowFilters(**{p.name: values[p.name] for p in _FILTERS})


def parse_filter_request(body: Any, *, max_limit: int = DEFAULT_LIMIT) -> FilterRequest:
    """`POST /flows/filter`: `{limit?, offset?, sort?, flows?, flow_runs?, ...}`."""
    limit, values = _limited(body, _OFFSET, max_limit)
    return FilterRequest(_filters(values), limit, values["offset"], values["sort"])


def parse_count_request(body: Any) -> CountRequest:
    """`POST /flows/count`: the five filters only; a `limit` key is ignored like any other."""
    data = _as_object(body, _FILTERS)
    values, errors = _validate(data, _FILTERS)
    if errors:
        raise InvalidRequest(errors, body)
    return CountRequest(_filters(values))


def parse_paginate_request(body: Any, *, max_limit: int = DEFAULT_LIMIT) -> PaginateRequest:
    """`POST /flows/paginate`: `{limit?, page?, flows?, ..., sort?}`."""
    limit, values = _limited(body, _PAGE, max_limit)
    return PaginateRequest(_filters(values), limit, values["page"], values["sort"])


def parse_bulk_delete_request(body: Any) -> BulkDeleteRequest:
    """`POST /flows/bulk_delete`: `{flows?: FlowFilter, limit?: 1..50}` (plain validation 422s)."""
    params = (_BULK_FLOWS, _BULK_LIMIT)
    data = _as_object(body, params)
    values, errors = _validate(data, params)
    if errors:
        raise InvalidRequest(errors, body)
    return BulkDeleteRequest(values["flows"], values["limit"])


def _required(body: Any, name: str) -> Any:
    value = body.get(name) if isinstance(body, dict) else None
    if value is None:
        raise InvalidRequest([_missing(name)], body)
    return value


def parse_read_request(body: Any) -> str:
    """`{id}` → the canonical lower-case id. Any spelling Starlette's convertor takes is fine
    (Prefect's id is a path parameter): dashless, upper-case, extra keys ignored.

    Where Prefect's router answers a malformed id with a route-level 404, the contract moves the id
    into the body, so it fails as a body field: 422 at `["body", "id"]`.
    """
    value = _required(body, "id")
    if isinstance(value, str) and _STARLETTE_UUID.fullmatch(value):
        return str(uuid.UUID(value))
    try:
        _UUID.validate_python(value)
    except ValidationError as exc:
        raise InvalidRequest(prefect_errors(exc, ("body", "id")), body) from None
    # pydantic also takes forms Starlette's route never matched ("{...}", "urn:uuid:...").
    reason = "expected 32 hex digits, each of the four dashes optional"
    error = {
        "type": "uuid_parsing",
        "loc": ["body", "id"],
        "msg": f"Input should be a valid UUID, {reason}",
        "input": value if isinstance(value, str) else str(value),
        "ctx": {"error": reason},
    }
    raise InvalidRequest([error], body)


def parse_read_by_name_request(body: Any) -> str:
    """`{name}` → the name: any JSON string, verbatim (a lookup needs no name pattern)."""
    value = _required(body, "name")
    try:
        name: str = _STR.validate_python(value, strict=True)
        return name
    except ValidationError as exc:
        raise InvalidRequest(prefect_errors(exc, ("body", "name")), body) from None


def refuse_unstorable_text(
    stores_nul: bool, body: Any, name: str | None, tags: Sequence[str] | None
) -> None:
    """Where the read model cannot store U+0000 (PostgreSQL's `text`), refuse a name or tag
    holding one: an event the projector cannot write would stall the read model for every later
    event. Prefect on SQLite stores them (the SQLite read model does too); Prefect on PostgreSQL
    fails."""
    if stores_nul:
        return
    fields: list[tuple[list[str | int], str]] = [] if name is None else [(["name"], name)]
    fields += [(["tags", index], tag) for index, tag in enumerate(tags or ())]
    errors = [
        {
            "type": "value_error",
            "loc": ["body", *loc],
            "msg": f"Value error, {_NUL_IN_POSTGRES}",
            "input": text,
            "ctx": {"error": {}},
        }
        for loc, text in fields
        if "\x00" in text
    ]
    if errors:
        raise InvalidRequest(errors, body)


_NUL_IN_POSTGRES = "the PostgreSQL read model cannot store U+0000 in text"
