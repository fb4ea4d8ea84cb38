"""Prefect 3.9.1's filter schemas (`prefect.server.schemas.filters`) as pydantic models.

Only validation lives here; `filter_sql` turns the models into SQL. Class names, field names,
field order, types and defaults copy Prefect's exactly, because every one of them shows in a 422:
a class name in `model_type` messages ("... or instance of FlowFilter"), field order in the order of
errors, types in the error `type`. Every model forbids unknown keys (`extra_forbidden`), as
Prefect's `PrefectFilterBaseModel` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import pendulum
from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

__all__ = [
    "LIKE_MAX_LENGTH",
    "DeploymentFilter",
    "DeploymentFilterConcurrencyLimit",
    "DeploymentFilterId",
    "DeploymentFilterName",
    "DeploymentFilterPaused",
    "DeploymentFilterTags",
    "DeploymentFilterWorkQueueName",
    "DeploymentOrFlowNameFilter",
    "FlowFilter",
    "FlowFilterDeployment",
    "FlowFilterId",
    "FlowFilterName",
    "FlowFilterTags",
    "FlowFilters",
    "FlowRunFilter",
    "FlowRunFilterCreatedBy",
    "FlowRunFilterDeploymentId",
    "FlowRunFilterEndTime",
    "FlowRunFilterExpectedStartTime",
    "FlowRunFilterFlowVersion",
    "FlowRunFilterId",
    "FlowRunFilterIdempotencyKey",
    "FlowRunFilterName",
    "FlowRunFilterNextScheduledStartTime",
    "FlowRunFilterParentFlowRunId",
    "FlowRunFilterParentTaskRunId",
    "FlowRunFilterStartTime",
    "FlowRunFilterState",
    "FlowRunFilterStateName",
    "FlowRunFilterStateType",
    "FlowRunFilterTags",
    "FlowRunFilterWorkQueueName",
    "FlowSort",
    "Operator",
    "StateType",
    "TaskRunFilter",
    "TaskRunFilterEndTime",
    "TaskRunFilterExpectedStartTime",
    "TaskRunFilterFlowRunId",
    "TaskRunFilterId",
    "TaskRunFilterName",
    "TaskRunFilterStartTime",
    "TaskRunFilterState",
    "TaskRunFilterStateName",
    "TaskRunFilterStateType",
    "TaskRunFilterSubFlowRuns",
    "TaskRunFilterTags",
    "WorkPoolFilter",
    "WorkPoolFilterId",
    "WorkPoolFilterName",
    "WorkPoolFilterType",
]


# SQLite refuses a LIKE pattern above 50,000 bytes (SQLITE_MAX_LIKE_PATTERN_LENGTH), which a
# `like_` of 12,500 four-byte characters reaches: past this length a `like_` is a 422 (pydantic's
# `string_too_long`) on every backend, where Prefect on SQLite fails with a 500.
LIKE_MAX_LENGTH = 12_000
LikePattern = Annotated[str, Field(max_length=LIKE_MAX_LENGTH)]


class Operator(StrEnum):
    """How a filter combines its criteria (Prefect's `Operator` AutoEnum: value == name)."""

    and_ = "and_"
    or_ = "or_"


class StateType(StrEnum):
    """Prefect's run state types, in Prefect's declaration order (it shows in `enum` messages)."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"


class FlowSort(StrEnum):
    """`schemas.sorting.FlowSort`; `NAME_ASC` is the endpoints' default."""

    CREATED_DESC = "CREATED_DESC"
    UPDATED_DESC = "UPDATED_DESC"
    NAME_ASC = "NAME_ASC"
    NAME_DESC = "NAME_DESC"


def _prefect_datetime(value: Any, pydantic_datetime: ValidatorFunctionWrapHandler) -> datetime:
    """Prefect's filter `DateTime` (pydantic-extra-types' pendulum type, what Prefect 3.9.1
    runs on Python < 3.13), step for step, because its steps decide the 422s.

    pydantic's lax datetime first; whatever it refuses goes to `pendulum.parse(strict=True)`,
    whose own messages become `value_error`s ("Unable to parse string [x]", "hour must be in
    0..23"); a value pendulum cannot take at all (a list, a boolean) is "value is not a valid
    datetime". Pendulum also accepts forms pydantic does not ("2020-W01", "10:00" today).
    """
    try:
        return _as_utc(pydantic_datetime(value))
    except ValueError:
        try:
            parsed = pendulum.parse(value, strict=True)
        except ValueError:
            raise
        except Exception as exc:
            raise PydanticCustomError("value_error", "value is not a valid datetime") from exc
        if not isinstance(parsed, pendulum.DateTime):  # a Duration, an Interval, ...
            # A ValueError, as Prefect raises: pydantic turns it into the `value_error` 422.
            message = f"value is not a valid datetime it is a {type(parsed)}"
            raise ValueError(message) from None  # noqa: TRY004
        return _as_utc(parsed)


def _as_utc(value: datetime) -> datetime:
    """A plain `datetime` in UTC. A naive one has no defined instant: it is read as UTC (the
    read model's zone, and Prefect's), never as the server's local time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    plain = datetime(
        *value.timetuple()[:6], value.microsecond, tzinfo=value.tzinfo, fold=value.fold
    )
    return plain.astimezone(UTC)


FilterDateTime = Annotated[datetime, WrapValidator(_prefect_datetime)]


class PrefectFilterBaseModel(BaseModel):
    """Every filter and sub-filter: unknown keys are a 422, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PrefectOperatorFilterBaseModel(PrefectFilterBaseModel):
    """A filter whose criteria are combined by a caller-chosen operator (default `and_`)."""

    operator: Operator = Operator.and_


# --- flows -------------------------------------------------------------------------------------


class FlowFilterId(PrefectFilterBaseModel):
    any_: list[UUID] | None = None
    not_any_: list[UUID] | None = None


class FlowFilterDeployment(PrefectOperatorFilterBaseModel):
    is_null_: bool | None = None


class FlowFilterName(PrefectFilterBaseModel):
    any_: list[str] | None = None
    like_: LikePattern | None = None


class FlowFilterTags(PrefectOperatorFilterBaseModel):
    all_: list[str] | None = None
    is_null_: bool | None = None


class FlowFilter(PrefectOperatorFilterBaseModel):
    id: FlowFilterId | None = None
    deployment: FlowFilterDeployment | None = None
    name: FlowFilterName | None = None
    tags: FlowFilterTags | None = None


# --- flow runs ---------------------------------------------------------------------------------


class FlowRunFilterId(PrefectFilterBaseModel):
    any_: list[UUID] | None = None
    not_any_: list[UUID] | None = None


class FlowRunFilterName(PrefectFilterBaseModel):
    any_: list[str] | None = None
    like_: LikePattern | None = None


class FlowRunFilterTags(PrefectOperatorFilterBaseModel):
    all_: list[str] | None = None
    any_: list[str] | None = None
    is_null_: bool | None = None


class FlowRunFilterDeploymentId(PrefectOperatorFilterBaseModel):
    any_: list[UUID] | None = None
    is_null_: bool | None = None


class FlowRunFilterWorkQueueName(PrefectOperatorFilterBaseModel):
    any_: list[str] | None = None
    is_null_: bool | None = None


class FlowRunFilterStateType(PrefectFilterBaseModel):
    any_: list[StateType] | None = None
    not_any_: list[StateType] | None = None


class FlowRunFilterStateName(PrefectFilterBaseModel):
    any_: list[str] | None = None
    not_any_: list[str] | None = None


class FlowRunFilterState(PrefectOperatorFilterBaseModel):
    type: FlowRunFilterStateType | None = None
    name: FlowRunFilterStateName | None = None


class FlowRunFilterFlowVersion(PrefectFilterBaseModel):
    any_: list[str] | None = None


class FlowRunFilterStartTime(PrefectFilterBaseModel):
    before_: FilterDateTime | None = None
    after_: FilterDateTime | None = None
    is_null_: bool | None = None


class FlowRunFilterEndTime(PrefectFilterBaseModel):
    before_: FilterDateTime | None = None
    after_: FilterDateTime | None = None
    is_null_: bool | None = None


class FlowRunFilterExpectedStartTime(PrefectFilterBaseModel):
    before_: FilterDateTime | None = None
    after_: FilterDateTime | None = None


class FlowRunFilterNextScheduledStartTime(PrefectFilterBaseModel):
    before_: FilterDateTime | None = None
    after_: FilterDateTime | None = None


class FlowRunFilterParentFlowRunId(PrefectOperatorFilterBaseModel):
    any_: list[UUID] | None = None


class FlowRunFilterParentTaskRunId(PrefectOperatorFilterBaseModel):
    any_: list[UUID] | None = None
    is_null_: bool | None = None


class FlowRunFilterIdempotencyKey(PrefectFilterBaseModel):
    any_: list[str] | None = None
    not_any_: list[str] | None = None


class FlowRunFilterCreatedBy(PrefectOperatorFilterBaseModel):
    id_: list[UUID] | None = None
    type_: list[str] | None = None
    is_null_: bool | None = None


class FlowRunFilter(PrefectOperatorFilterBaseModel):
    id: FlowRunFilterId | None = None
    name: FlowRunFilterName | None = None
    tags: FlowRunFilterTags | None = None
    deployment_id: FlowRunFilterDeploymentId | None = None
    work_queue_name: FlowRunFilterWorkQueueName | None = None
    state: FlowRunFilterState | None = None
    flow_version: FlowRunFilterFlowVersion | None = None
    start_time: FlowRunFilterStartTime | None = None
    end_time: FlowRunFilterEndTime | None = None
    expected_start_time: FlowRunFilterExpectedStartTime | None = None
    next_scheduled_start_time: FlowRunFilterNextScheduledStartTime | None = None
    parent_flow_run_id: FlowRunFilterParentFlowRunId | None = None
    parent_task_run_id: FlowRunFilterParentTaskRunId | None = None
    idempotency_key: FlowRunFilterIdempotencyKey | None = None
    created_by: FlowRunFilterCreatedBy | None = None


# --- task runs ---------------------------------------------------------------------------------


class TaskRunFilterId(PrefectFilterBaseModel):
    any_: list[UUID] | None = None


class TaskRunFilterName(PrefectFilterBaseModel):
    any_: list[str] | None = None
    like_: LikePattern | None = None


class TaskRunFilterTags(PrefectOperatorFilterBaseModel):
    all_: list[str] | None = None
    is_null_: bool | None = None


class TaskRunFilterStateType(PrefectFilterBaseModel):
    any_: list[StateType] | None = None


class TaskRunFilterStateName(PrefectFilterBaseModel):
    any_: list[str] | None = None


class TaskRunFilterState(PrefectOperatorFilterBaseModel):
    type: TaskRunFilterStateType | None = None
    name: TaskRunFilterStateName | None = None


class TaskRunFilterSubFlowRuns(PrefectFilterBaseModel):
    exists_: bool | None = None


class TaskRunFilterStartTime(PrefectFilterBaseModel):
    before_: FilterDateTime | None = None
    after_: FilterDateTime | None = None
    is_null_: bool | None = None


class TaskRunFilterEndTime(PrefectFilterBaseModel):
    before_: FilterDateTime | None = None
    after_: FilterDateTime | None = None
    is_null_: bool | None = None


class TaskRunFilterExpectedStartTime(PrefectFilterBaseModel):
    before_: FilterDateTime | None = None
    after_: FilterDateTime | None = None


class TaskRunFilterFlowRunId(PrefectOperatorFilterBaseModel):
    any_: list[UUID] | None = None
    # Prefect's quirk: defaults to False, so `{"flow_run_id": {}}` means "has a flow run".
    is_null_: bool | None = False


class TaskRunFilter(PrefectOperatorFilterBaseModel):
    id: TaskRunFilterId | None = None
    name: TaskRunFilterName | None = None
    tags: TaskRunFilterTags | None = None
    state: TaskRunFilterState | None = None
    start_time: TaskRunFilterStartTime | None = None
    end_time: TaskRunFilterEndTime | None = None
    expected_start_time: TaskRunFilterExpectedStartTime | None = None
    subflow_runs: TaskRunFilterSubFlowRuns | None = None
    flow_run_id: TaskRunFilterFlowRunId | None = None


# --- deployments and work pools ----------------------------------------------------------------


class DeploymentFilterId(PrefectFilterBaseModel):
    any_: list[UUID] | None = None
    not_any_: list[UUID] | None = None


class DeploymentFilterName(PrefectFilterBaseModel):
    any_: list[str] | None = None
    like_: LikePattern | None = None


class DeploymentOrFlowNameFilter(PrefectFilterBaseModel):
    like_: LikePattern | None = None


class DeploymentFilterPaused(PrefectFilterBaseModel):
    eq_: bool | None = None


class DeploymentFilterTags(PrefectOperatorFilterBaseModel):
    all_: list[str] | None = None
    any_: list[str] | None = None
    is_null_: bool | None = None


class DeploymentFilterWorkQueueName(PrefectFilterBaseModel):
    any_: list[str] | None = None


class DeploymentFilterConcurrencyLimit(PrefectFilterBaseModel):
    """Deprecated in Prefect: validated, then ignored (it compiles to no SQL)."""

    ge_: int | None = None
    le_: int | None = None
    is_null_: bool | None = None


class DeploymentFilter(PrefectOperatorFilterBaseModel):
    id: DeploymentFilterId | None = None
    name: DeploymentFilterName | None = None
    flow_or_deployment_name: DeploymentOrFlowNameFilter | None = None
    paused: DeploymentFilterPaused | None = None
    tags: DeploymentFilterTags | None = None
    work_queue_name: DeploymentFilterWorkQueueName | None = None
    concurrency_limit: DeploymentFilterConcurrencyLimit | None = None


class WorkPoolFilterId(PrefectFilterBaseModel):
    any_: list[UUID] | None = None


class WorkPoolFilterName(PrefectFilterBaseModel):
    any_: list[str] | None = None


class WorkPoolFilterType(PrefectFilterBaseModel):
    any_: list[str] | None = None


class WorkPoolFilter(PrefectOperatorFilterBaseModel):
    id: WorkPoolFilterId | None = None
    name: WorkPoolFilterName | None = None
    type: WorkPoolFilterType | None = None


@dataclass(frozen=True, slots=True)
class FlowFilters:
    """The five filter groups the flows endpoints take; `None` = absent (`null` or no key)."""

    flows: FlowFilter | None = None
    flow_runs: FlowRunFilter | None = None
    task_runs: TaskRunFilter | None = None
    deployments: DeploymentFilter | None = None
    work_pools: WorkPoolFilter | None = None
