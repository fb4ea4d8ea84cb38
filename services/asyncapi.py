"""The service's AsyncAPI document, generated from the FastStream app (`flows asyncapi`).

FastStream writes the channels, operations and servers from the app's subscribers, and each
request's payload schema from its handler's annotation (set here; handlers take the raw
message, so the annotation documents and never validates). FastStream does not describe
replies, so every operation gets AsyncAPI 3's `reply` here: the success body Prefect answers
with, the error bodies, and the reply headers of the contract. `docs/asyncapi.json` is this
document for the default settings; a test fails when the two differ.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any, TextIO

import orjson
from faststream import FastStream
from faststream.specification import AsyncAPI
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from events.contract.audit import EventsRequest, HistoryRequest, StatsRequest
from events.contract.commands import CreateFlow, DeleteFlow, FlowId, UpdateFlow
from events.contract.filters import (
    DeploymentFilter,
    FlowFilter,
    FlowRunFilter,
    FlowSort,
    TaskRunFilter,
    WorkPoolFilter,
)
from services.discovery import SERVICE_NAME, service_version
from services.settings import Settings

__all__ = ["describe_request", "document", "print_document", "render"]

_SCHEMAS = "#/components/schemas/{model}"


# -- request bodies (the ones the write side and the audit reader do not already define) -----
class _Filters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    flows: FlowFilter | None = None
    flow_runs: FlowRunFilter | None = None
    task_runs: TaskRunFilter | None = None
    deployments: DeploymentFilter | None = None
    work_pools: WorkPoolFilter | None = None


class FilterFlows(_Filters):
    """`POST /flows/filter`'s body."""

    limit: Annotated[int, Field(ge=0, le=200)] = 200
    offset: Annotated[int, Field(ge=0)] = 0
    sort: FlowSort = FlowSort.NAME_ASC


class CountFlows(_Filters):
    """`POST /flows/count`'s body."""


class PaginateFlows(_Filters):
    """`POST /flows/paginate`'s body."""

    limit: Annotated[int, Field(ge=0, le=200)] = 200
    page: Annotated[int, Field(ge=1)] = 1
    sort: FlowSort = FlowSort.NAME_ASC


class BulkDeleteFlows(BaseModel):
    """`POST /flows/bulk_delete`'s body."""

    flows: FlowFilter | None = None
    limit: Annotated[int, Field(ge=1, le=50)] = 50


class ReadFlow(BaseModel):
    """`GET /flows/{id}`, the id moved into the body."""

    id: FlowId


class ReadFlowByName(BaseModel):
    """`GET /flows/name/{name}`, the name moved into the body."""

    name: str


# -- reply bodies ------------------------------------------------------------------------------
class Flow(BaseModel):
    """A flow, as Prefect's API returns it."""

    id: FlowId
    created: str = Field(description="ISO 8601, UTC")
    updated: str = Field(description="ISO 8601, UTC")
    name: str
    tags: list[str]
    labels: dict[str, Any]


class FlowPage(BaseModel):
    results: list[Flow]
    count: int
    limit: int
    pages: int
    page: int


class Deleted(BaseModel):
    deleted: list[FlowId]


class RecordedEvent(BaseModel):
    """An event of the log (CONTRACT.md "The event log") with its position."""

    id: str
    type: str = Field(description="FlowCreated, FlowUpdated or FlowDeleted")
    flow_id: FlowId
    occurred: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    schema_: int = Field(alias="schema")
    prev: str | None
    position: int


class Health(BaseModel):
    status: str = Field(description='"ok" or "degraded"')
    position: int
    log_end: int | None
    lag: int | None
    parked_count: int
    parked: list[dict[str, Any]]
    problems: list[str]
    refused_requests: dict[str, int]


class Detail(BaseModel):
    """404, 503 and the limit 422s: Prefect's `{"detail": ...}`."""

    detail: str


class InvalidRequest(BaseModel):
    """422 for a body that fails validation: Prefect's RequestValidationError shape."""

    exception_message: str
    exception_detail: list[dict[str, Any]]
    request_body: Any


class ReplyHeaders(BaseModel):
    """The headers of every reply (CONTRACT.md "Reply headers")."""

    model_config = ConfigDict(populate_by_name=True)
    flows_status: str = Field(
        alias="Flows-Status", description="the HTTP status Prefect would answer"
    )
    flows_position: str | None = Field(
        None, alias="Flows-Position", description="commands: where the effect is visible"
    )
    error_code: str | None = Field(None, alias="Nats-Service-Error-Code")
    error: str | None = Field(None, alias="Nats-Service-Error")


# operation -> (request body, success body with its status)
_CONTRACT: dict[str, tuple[Any, Any, str]] = {
    "create": (CreateFlow, Flow, "201 new flow, 200 the existing flow of that name"),
    "update": (UpdateFlow, None, "204, empty"),
    "delete": (DeleteFlow, None, "204, empty"),
    "bulk_delete": (BulkDeleteFlows, Deleted, "200"),
    "read": (ReadFlow, Flow, "200"),
    "read_by_name": (ReadFlowByName, Flow, "200"),
    "filter": (FilterFlows, list[Flow], "200"),
    "count": (CountFlows, int, "200"),
    "paginate": (PaginateFlows, FlowPage, "200"),
    "history": (HistoryRequest, list[RecordedEvent], "200, oldest first"),
    "events": (EventsRequest, list[RecordedEvent], "200, in log order"),
    "stats": (StatsRequest, Health, "200"),
}


def describe_request(handler: Callable[..., Any], operation: str) -> None:
    """Annotate a handler with its request body, for FastStream's document (only)."""
    handler.__annotations__["message"] = _CONTRACT[operation][0]


def document(app: FastStream) -> dict[str, Any]:
    """The AsyncAPI 3 document of `app`, with the replies of the contract."""
    assert app.broker is not None, "the app has its broker from create_app"
    spec = AsyncAPI(
        app.broker,
        title="flows",
        version=service_version(),
        description=(
            "Prefect 3's flows API over NATS request-reply, event-sourced on JetStream. "
            "Bodies are Prefect's JSON bodies; see CONTRACT.md."
        ),
        identifier=f"urn:nats:{SERVICE_NAME}",
    )
    doc: dict[str, Any] = spec.to_specification().to_jsonable()
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    messages = doc["components"].setdefault("messages", {})
    schemas.update(_schemas([ReplyHeaders, Detail, InvalidRequest]))
    for operation_id, operation in doc.get("operations", {}).items():
        name = _operation_name(operation_id, doc)
        _, success, statuses = _CONTRACT[name]
        reply = f"{operation_id}:Reply"
        messages[reply] = {
            "title": reply,
            "summary": f"Success: {statuses}; errors: 404/422/503 with Prefect's bodies",
            "headers": {"$ref": _SCHEMAS.format(model="ReplyHeaders")},
            "payload": {
                "oneOf": [
                    _success_schema(success, schemas),
                    {"$ref": _SCHEMAS.format(model="Detail")},
                    {"$ref": _SCHEMAS.format(model="InvalidRequest")},
                ]
            },
        }
        operation["reply"] = {
            "address": {"location": "$message.header#/reply_to"},
            "messages": [{"$ref": f"#/components/messages/{reply}"}],
        }
    return doc


def _operation_name(operation_id: str, doc: dict[str, Any]) -> str:
    """The contract's operation of a FastStream operation: its channel's last subject token."""
    channel = doc["operations"][operation_id]["channel"]["$ref"].rsplit("/", 1)[1]
    address: str = doc["channels"][channel]["address"]
    return address.rsplit(".", 1)[1]


def _success_schema(success: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    if success is None:
        return {"type": "null", "description": "an empty body"}
    found = TypeAdapter(success).json_schema(ref_template=_SCHEMAS)
    schemas.update(found.pop("$defs", {}))
    if isinstance(success, type) and issubclass(success, BaseModel):
        schemas[success.__name__] = found
        return {"$ref": _SCHEMAS.format(model=success.__name__)}
    return found


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=_SCHEMAS, by_alias=True)
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def render(settings: Settings, *, as_yaml: bool = False) -> str:
    """The document of the app these settings make, as JSON (stable: `docs/asyncapi.json`) or
    YAML."""
    from services.app import create_app  # the app imports this module for describe_request

    doc = document(create_app(settings))
    if as_yaml:
        import yaml

        return str(yaml.safe_dump(doc, sort_keys=True, allow_unicode=True))
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


async def print_document(
    settings: Settings, out: TextIO = sys.stdout, *, yaml: bool = False
) -> int:
    """`flows asyncapi [--yaml]`."""
    out.write(render(settings, as_yaml=yaml))
    return 0
