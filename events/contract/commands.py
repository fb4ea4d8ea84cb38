"""The write side's command language: what a client may ask the flows service to change.

Each request model reproduces the validation of the Prefect 3.9.1 schema it stands for
(`FlowCreate`, `FlowUpdate`, the DELETE route), error for error, so a 422 over NATS carries the
same `exception_detail` Prefect's HTTP API would. The `parse_*` functions take the JSON that
`load_json_body` returned and raise `InvalidRequest`; they run on every command, so each is one
`model_validate` on a model whose schema pydantic built once, at import.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeAlias, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
)
from pydantic_core import PydanticCustomError

from events.contract.bodies import validate_body
from events.contract.errors import InvalidRequest

__all__ = [
    "Command",
    "CreateFlow",
    "DeleteFlow",
    "DeleteFlows",
    "FlowId",
    "LabelValue",
    "Name",
    "UpdateFlow",
    "parse_create",
    "parse_delete",
    "parse_update",
]

# Prefect's `Name`: the banned characters are exactly those that would break its URL routes.
Name: TypeAlias = Annotated[str, Field(pattern=r"^[^/%&><]+$")]

# Strict members tried in this order, as in `prefect.types.KeyValueLabels`: JSON true stays a
# bool and 3 an int instead of being coerced by an earlier member. Integers have no bound, as in
# Prefect. Unlike Prefect, NaN and the infinities (JSON `NaN`, `Infinity`, `1e400`) are refused
# (`finite_number` at "float"): Prefect accepts them and then fails with a 500, and no JSON
# reply or event could carry them.
LabelValue: TypeAlias = (
    StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)] | str
)

# Starlette's `uuid` path convertor: 32 hex digits, each of the four dashes optional, any case.
# pydantic's own UUID type disagrees at the edges (it rejects partial dashes, accepts braces and
# `urn:uuid:`), so the id is checked against the convertor's pattern instead.
_PATH_UUID = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


def _canonical_uuid(value: str) -> str:
    if _PATH_UUID.fullmatch(value) is None:
        raise PydanticCustomError(
            "uuid_parsing",
            "Input should be a valid UUID, {error}",
            {"error": "expected 32 hexadecimal digits, optionally dashed as 8-4-4-4-12"},
        )
    return str(UUID(value))


# A flow id as the rest of the service keys it: the canonical lower-case dashed form.
FlowId: TypeAlias = Annotated[str, AfterValidator(_canonical_uuid)]


class _Request(BaseModel):
    # FastAPI validates bodies with `from_attributes=True`, which is why Prefect answers a
    # non-object body (`[]`, `"x"`, `5`) with `model_attributes_type` rather than `model_type`.
    model_config = ConfigDict(frozen=True, extra="forbid", from_attributes=True)


class CreateFlow(_Request):
    """Register a flow by name; Prefect's `FlowCreate`."""

    name: Name
    tags: list[str] = Field(default_factory=list)
    # `None` is a valid value and is kept: the nullable branch wins before Prefect's None->{} cast.
    labels: dict[str, LabelValue] | None = Field(default_factory=dict)


class UpdateFlow(_Request):
    """Change a flow's tags; Prefect's `FlowUpdate` plus the path's `id`.

    `tags is None` means the body left tags out (Prefect's `exclude_unset`: leave them alone);
    an explicit `null` is rejected, as in Prefect, so the two can never be confused. That holds
    in code too: build "leave tags alone" as `UpdateFlow(id=...)`, not with `tags=None`.
    """

    id: FlowId
    tags: list[str] | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _null_is_not_a_list(cls, value: Any) -> Any:
        # Prefect's field is a plain `list[str]` with a default: null fails as `list_type`.
        if value is None:
            raise PydanticCustomError("list_type", "Input should be a valid list")
        return value


class DeleteFlow(_Request):
    """Delete one flow by id. Prefect's DELETE has no body, so other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: FlowId


class DeleteFlows(BaseModel):
    """Delete flows a bulk-delete query already selected; built by the caller, never parsed."""

    model_config = ConfigDict(frozen=True)

    flow_ids: tuple[str, ...]


Command: TypeAlias = CreateFlow | UpdateFlow | DeleteFlow | DeleteFlows

_RequestT = TypeVar("_RequestT", bound=_Request)


def _parse(model: type[_RequestT], data: Any) -> _RequestT:
    if data is None:
        # FastAPI's answer to a required body that is absent (or JSON null), before any model.
        missing = {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
        raise InvalidRequest([missing], None)
    result: _RequestT = validate_body(model, data)
    return result


def parse_create(data: Any) -> CreateFlow:
    """Validate a `P.cmd.create` body; raise `InvalidRequest` with Prefect's errors."""
    return _parse(CreateFlow, data)


def parse_update(data: Any) -> UpdateFlow:
    """Validate a `P.cmd.update` body (`{id, tags?}`); all errors come before any lookup."""
    return _parse(UpdateFlow, data)


def parse_delete(data: Any) -> DeleteFlow:
    """Validate a `P.cmd.delete` body (`{id}`)."""
    return _parse(DeleteFlow, data)
