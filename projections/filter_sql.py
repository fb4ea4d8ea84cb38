"""Filter models → SQLAlchemy Core clauses over the read model, with Prefect 3.9.1's semantics.

The rules that decide results (reference §4 and §8):

* A criterion whose value is `null` adds nothing. So do `not_any_: []`, `all_: []` and `like_: ""`
  (Prefect ≥ 3.6.23). `any_: []` is `IN ()`: it matches nothing.
* A sub-filter combines its criteria with AND, or with its own `operator` where Prefect has one.
  A *present* sub-filter with no criteria is TRUE, so under `or_` it makes its parent match all.
  The two state filters are the exception: they skip their TRUE parts.
* `like_` is a case-insensitive substring match with `_` and `%` left live (Prefect does not
  escape them).
* The five groups are ANDed. Deployment and work-pool criteria must hold for one deployment, and
  flow-run and task-run criteria for one flow run: each pair is one EXISTS. A present-but-empty
  cross filter still needs one related row; `flows: {}` adds nothing.

Value lists are sent as ONE bound parameter (a JSON text on SQLite, an array on PostgreSQL), so
an `any_` of 100k ids neither hits SQLite's bound-parameter limit nor builds a 100k-node tree.
Every value a request brings is a parameter named after where it sits in the request, its value
taken from `filter_params.describe` (so a statement built once per shape serves every request
of that shape: projections/queries.py). JSON tag operators differ per backend, hence the
dialect name every entry point takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    Select,
    String,
    Text,
    all_,
    and_,
    any_,
    bindparam,
    distinct,
    func,
    literal_column,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import BindParameter, True_
from sqlalchemy.types import TypeEngine

from events.contract.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    DeploymentFilterPaused,
    DeploymentFilterTags,
    DeploymentFilterWorkQueueName,
    DeploymentOrFlowNameFilter,
    FlowFilter,
    FlowFilterDeployment,
    FlowFilterId,
    FlowFilterName,
    FlowFilters,
    FlowFilterTags,
    FlowRunFilter,
    FlowRunFilterCreatedBy,
    FlowRunFilterDeploymentId,
    FlowRunFilterId,
    FlowRunFilterIdempotencyKey,
    FlowRunFilterName,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterParentTaskRunId,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterTags,
    FlowRunFilterWorkQueueName,
    FlowSort,
    Operator,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
    TaskRunFilterName,
    TaskRunFilterState,
    TaskRunFilterSubFlowRuns,
    TaskRunFilterTags,
    WorkPoolFilter,
)
from projections.filter_params import (
    ALL_JSON,
    DISTINCT,
    HEX_JSON,
    PLAIN_JSON,
    TEXT_ARRAY,
    Described,
    describe,
    split_nul,
)
from projections.tables import (
    deployment,
    flow,
    flow_run,
    flow_tag,
    task_run,
    work_pool,
    work_queue,
)

__all__ = [
    "SUPPORTED_DIALECTS",
    "describe_filters",
    "flow_filter_where",
    "flow_order_by",
    "flows_where",
    "tags_all_only",
    "tags_only_count",
]

SUPPORTED_DIALECTS = frozenset({"sqlite", "postgresql"})

Clause = ColumnElement[bool]
M = TypeVar("M", bound=BaseModel)
ARRAY_OF_TEXT = ARRAY(Text)


def describe_filters(filters: FlowFilters) -> Described:
    """The shape and the named values of `filters`, as every entry point here binds them."""
    return describe(filters, "f")


def flows_where(
    filters: FlowFilters, dialect: str, described: Described | None = None
) -> Clause | None:
    """The WHERE clause selecting the flows that match all five groups; `None` = every flow.
    `described` is `describe_filters(filters)` where the caller has it already."""
    sql = _Compiler(dialect, described or describe_filters(filters))
    clauses: list[Clause | None] = []
    if filters.flows is not None:
        clauses.append(sql.flow(filters.flows))
    if filters.deployments is not None or filters.work_pools is not None:
        clauses.append(sql.deployment_exists(filters.deployments, filters.work_pools))
    if filters.flow_runs is not None or filters.task_runs is not None:
        clauses.append(sql.flow_run_exists(filters.flow_runs, filters.task_runs))
    return _drop_true(_combine(clauses, Operator.and_))


def flow_filter_where(flow_filter: FlowFilter | None, dialect: str) -> Clause | None:
    """The WHERE clause of a `FlowFilter` alone (bulk delete); `None` = every flow."""
    return flows_where(FlowFilters(flows=flow_filter), dialect)


def tags_only_count(
    filters: FlowFilters, dialect: str, described: Described | None = None
) -> Select[int] | None:
    """A faster COUNT for filters that are nothing but `flows.tags.all_`, else `None`.

    Such a count needs no `flow` row at all: `flow_tag` holds one row per distinct tag of a
    live flow (its foreign key cascades, and the projector deletes a flow's tags with it), so
    counting the flows having every needle is a range count on the (tag, flow_id) index —
    ~10x faster than probing each of a million flows.
    """
    needles = tags_all_only(filters)
    if needles is None or filters.flows is None or filters.flows.tags is None:
        return None  # (the last two only say to the type checker what the first implies)
    tags = filters.flows.tags
    sql = _Compiler(dialect, described or describe_filters(filters))
    matched = sql.any_(flow_tag.c.tag, tags, "all_")
    assert matched is not None
    if len(set(needles)) == 1:  # one distinct value or more: part of the shape
        return select(func.count()).select_from(flow_tag).where(matched)
    having_all = (
        select(flow_tag.c.flow_id)
        .where(matched)
        .group_by(flow_tag.c.flow_id)
        .having(func.count() == sql.count(tags, "all_"))
        .subquery()
    )
    return select(func.count()).select_from(having_all)


def tags_all_only(filters: FlowFilters) -> list[str] | None:
    """The tags of `flows.tags.all_` when the filter is that (non-empty) and nothing else."""
    f = filters.flows
    others = (filters.flow_runs, filters.task_runs, filters.deployments, filters.work_pools)
    if f is None or any(group is not None for group in others):
        return None
    if f.id is not None or f.deployment is not None or f.name is not None or f.tags is None:
        return None
    if f.tags.is_null_ is not None or not f.tags.all_:
        return None
    return [str(tag) for tag in f.tags.all_]


def flow_order_by(sort: FlowSort) -> tuple[ColumnElement[Any], ...]:
    """ORDER BY for a `FlowSort`; `flow.id` breaks ties, so pages never overlap or skip."""
    key: ColumnElement[Any] = {
        FlowSort.NAME_ASC: flow.c.name.asc(),
        FlowSort.NAME_DESC: flow.c.name.desc(),
        FlowSort.CREATED_DESC: flow.c.created.desc(),
        FlowSort.UPDATED_DESC: flow.c.updated.desc(),
    }[sort]
    return key, flow.c.id.asc()


# --- combinators -------------------------------------------------------------------------------


def _combine(clauses: Iterable[Clause | None], operator: Operator) -> Clause | None:
    """Criteria that produced nothing are left out; nothing left → `None` (Prefect's TRUE).

    TRUE parts (present sub-filters without criteria) are folded here, as SQL would: under
    `and_` they add nothing, under `or_` they make the whole TRUE. So a filter selecting every
    flow, however spelled, comes out as TRUE itself: no WHERE at all, and a count that the
    kept counters answer (projections/kept_counts.py)."""
    kept = [c for c in clauses if c is not None]
    if not kept:
        return None
    criteria = [c for c in kept if not isinstance(c, True_)]
    if len(criteria) < len(kept) and (operator is Operator.or_ or not criteria):
        return true()
    return and_(*criteria) if operator is Operator.and_ else or_(*criteria)


def _all(*clauses: Clause | None) -> Clause | None:
    """Criteria of a sub-filter without an `operator` are always ANDed."""
    return _combine(clauses, Operator.and_)


def _sub(model: M | None, compile_: Callable[[M], Clause | None]) -> Clause | None:
    """A sub-filter inside its parent: absent → nothing; present without criteria → TRUE."""
    if model is None:
        return None
    clause = compile_(model)
    return true() if clause is None else clause


def _drop_true(clause: Clause | None) -> Clause | None:
    # `or_(TRUE, x)` folds to TRUE: send no WHERE at all rather than `WHERE 1 = 1`.
    return None if isinstance(clause, True_) else clause


def _is_null(column: ColumnElement[Any], value: bool | None) -> Clause | None:
    if value is None:
        return None
    return column.is_(None) if value else column.is_not(None)


class _Compiler:
    """Compiles filter models for one SQL dialect. Each method compiles one (sub-)filter.

    A criterion is passed as its owner and field name (`s, "any_"`): its values are bound by
    the name `described` gives them, with the values `described` holds.
    """

    def __init__(self, dialect: str, described: Described) -> None:
        if dialect not in SUPPORTED_DIALECTS:
            raise ValueError(f"unsupported SQL dialect {dialect!r}")
        self.postgres = dialect == "postgresql"
        self._described = described

    # --- bound values ---

    def _param(self, name: str, type_: TypeEngine[Any]) -> BindParameter[Any]:
        return bindparam(name, self._described.params[name], type_=type_)

    def _name(self, owner: object, field: str) -> str:
        return self._described.name(owner, field)

    def _json_values(self, name: str) -> Select[Any]:
        rows = func.json_each(self._param(name, String())).table_valued("value")
        return select(rows.c.value)

    def _array(self, owner: object, field: str) -> ColumnElement[Any]:
        return self._param(self._name(owner, field) + TEXT_ARRAY, ARRAY_OF_TEXT)

    def count(self, owner: object, field: str) -> ColumnElement[int]:
        """How many distinct values `owner.field` holds."""
        return self._param(self._name(owner, field) + DISTINCT, Integer())

    def like(self, column: ColumnElement[str], owner: object, field: str) -> Clause | None:
        if not getattr(owner, field):
            return None
        pattern = self._param(self._name(owner, field), String())
        if self.postgres:
            return column.ilike(pattern)
        # Prefect's `ilike` is `lower(x) LIKE lower(p)` on SQLite, where `lower` folds ASCII
        # letters only and LIKE already ignores their case (SQLite's default; nothing here
        # sets `case_sensitive_like`): the same rows without two new strings per row tested
        # (~12% of a tag-started filter page).
        return column.like(pattern)

    def window(
        self, column: ColumnElement[datetime], owner: Any, is_null: bool | None = None
    ) -> Clause | None:
        """`owner.before_`/`owner.after_` are inclusive; `is_null_` tests the column itself."""
        return _all(
            None
            if owner.before_ is None
            else column <= self._param(self._name(owner, "before_"), column.type),
            None
            if owner.after_ is None
            else column >= self._param(self._name(owner, "after_"), column.type),
            _is_null(column, is_null),
        )

    # --- dialect-specific primitives ---

    def any_(self, column: ColumnElement[Any], owner: object, field: str) -> Clause | None:
        values = getattr(owner, field)
        if values is None:
            return None
        if self.postgres:
            return column == any_(self._array(owner, field))
        name = self._name(owner, field)
        plain, with_nul = split_nul([str(v) for v in values])
        found = column.in_(self._json_values(name + PLAIN_JSON))
        if not with_nul:
            return found
        by_bytes = func.hex(column).in_(self._json_values(name + HEX_JSON))
        return or_(found, by_bytes) if plain else by_bytes

    def not_any_(self, column: ColumnElement[Any], owner: object, field: str) -> Clause | None:
        values = getattr(owner, field)
        if not values:
            return None
        if self.postgres:
            return column != all_(self._array(owner, field))
        name = self._name(owner, field)
        plain, with_nul = split_nul([str(v) for v in values])
        kept = column.not_in(self._json_values(name + PLAIN_JSON))
        if not with_nul:
            return kept
        # `hex(NULL)` is '', which no value matches: `IS NOT NULL` keeps SQL's rule that a NULL
        # key is never NOT IN anything.
        return and_(
            kept if plain else column.is_not(None),
            func.hex(column).not_in(self._json_values(name + HEX_JSON)),
        )

    def tags_all(self, column: ColumnElement[Any], owner: object, field: str) -> Clause | None:
        """JSON list ⊇ tags (duplicates in either list do not count)."""
        if not getattr(owner, field):
            return None
        if self.postgres:
            has_all: Clause = type_coerce(column, JSONB).has_all(self._array(owner, field))
            return has_all
        items = func.json_each(column).table_valued("value")
        found = (
            select(func.count(distinct(items.c.value)))
            .select_from(items)
            .where(items.c.value.in_(self._json_values(self._name(owner, field) + ALL_JSON)))
            .scalar_subquery()
        )
        return found == self.count(owner, field)

    def tags_any(self, column: ColumnElement[Any], owner: object, field: str) -> Clause | None:
        """JSON list ∩ tags ≠ ∅; `[]` matches nothing."""
        if getattr(owner, field) is None:
            return None
        if self.postgres:
            has_any: Clause = type_coerce(column, JSONB).has_any(self._array(owner, field))
            return has_any
        items = func.json_each(column).table_valued("value")
        return (
            select(literal_column("1"))
            .select_from(items)
            .where(items.c.value.in_(self._json_values(self._name(owner, field) + ALL_JSON)))
            .exists()
        )

    def tags_empty(self, column: ColumnElement[Any], empty: bool | None) -> Clause | None:
        """`is_null_` on a JSON tag list means "is the empty list" (tags are never NULL)."""
        if empty is None:
            return None
        if self.postgres:
            coerced = type_coerce(column, JSONB)
            nothing = bindparam(None, [], type_=JSONB)
            return coerced == nothing if empty else coerced != nothing
        length = func.json_array_length(column)
        return length == 0 if empty else length != 0

    # --- flows ---

    def flow(self, f: FlowFilter) -> Clause | None:
        return _combine(
            [
                _sub(f.id, self._flow_id),
                _sub(f.deployment, self._flow_deployment),
                _sub(f.name, self._flow_name),
                _sub(f.tags, self._flow_tags),
            ],
            f.operator,
        )

    def _flow_id(self, s: FlowFilterId) -> Clause | None:
        return _all(self.any_(flow.c.id, s, "any_"), self.not_any_(flow.c.id, s, "not_any_"))

    def _flow_deployment(self, s: FlowFilterDeployment) -> Clause | None:
        if s.is_null_ is None:
            return None
        deployed = select(deployment.c.flow_id).distinct()
        return flow.c.id.not_in(deployed) if s.is_null_ else flow.c.id.in_(deployed)

    def _flow_name(self, s: FlowFilterName) -> Clause | None:
        return _all(self.any_(flow.c.name, s, "any_"), self.like(flow.c.name, s, "like_"))

    def _flow_tags(self, s: FlowFilterTags) -> Clause | None:
        return _combine([self._flow_tags_all(s), _flow_tags_empty(s.is_null_)], s.operator)

    def _flow_tags_all(self, s: FlowFilterTags) -> Clause | None:
        # `flow_tag` holds one row per distinct tag of a flow: a flow has every needle when as
        # many of its rows match as there are distinct needles. Correlated (a primary-key probe
        # per candidate flow) rather than `id IN (flows having all)`: that form builds the whole
        # set of tagged flows first (0.5 s for a common tag over 1M flows), while this one lets
        # a sorted, limited filter stop after its page (~1 ms).
        if not s.all_:
            return None
        matched = self.any_(flow_tag.c.tag, s, "all_")
        assert matched is not None
        present = (
            select(func.count())
            .select_from(flow_tag)
            .where(flow_tag.c.flow_id == flow.c.id, matched)
            .correlate(flow)
        )
        return present.scalar_subquery() == self.count(s, "all_")

    # --- deployments + work pools: one EXISTS over one deployment row ---

    def deployment_exists(
        self, deployments: DeploymentFilter | None, work_pools: WorkPoolFilter | None
    ) -> Clause:
        source: FromClause = deployment
        if work_pools is not None:
            # Inner joins: a deployment on no work queue cannot satisfy a work-pool filter.
            source = deployment.join(
                work_queue, work_queue.c.id == deployment.c.work_queue_id
            ).join(work_pool, work_pool.c.id == work_queue.c.work_pool_id)
        query: Select[tuple[Any]] = (
            select(literal_column("1"))
            .select_from(source)
            .where(deployment.c.flow_id == flow.c.id)
            .correlate(flow)
        )
        for clause in (_sub(deployments, self.deployment), _sub(work_pools, self.work_pool)):
            if clause is not None:
                query = query.where(clause)
        return query.exists()

    def deployment(self, f: DeploymentFilter) -> Clause | None:
        # `concurrency_limit` is deprecated in Prefect and adds nothing, not even TRUE.
        return _combine(
            [
                _sub(f.id, self._deployment_id),
                _sub(f.name, self._deployment_name),
                _sub(f.flow_or_deployment_name, self._flow_or_deployment_name),
                _sub(f.paused, self._deployment_paused),
                _sub(f.tags, self._deployment_tags),
                _sub(f.work_queue_name, self._deployment_work_queue_name),
            ],
            f.operator,
        )

    def _deployment_id(self, s: DeploymentFilterId) -> Clause | None:
        c = deployment.c
        return _all(self.any_(c.id, s, "any_"), self.not_any_(c.id, s, "not_any_"))

    def _deployment_name(self, s: DeploymentFilterName) -> Clause | None:
        return _all(
            self.any_(deployment.c.name, s, "any_"), self.like(deployment.c.name, s, "like_")
        )

    def _flow_or_deployment_name(self, s: DeploymentOrFlowNameFilter) -> Clause | None:
        # Prefect tests the deployment's own flow: inside the EXISTS, that is the outer row.
        by_deployment = self.like(deployment.c.name, s, "like_")
        by_flow = self.like(flow.c.name, s, "like_")
        if by_deployment is None or by_flow is None:
            return None
        return or_(by_deployment, by_flow)

    def _deployment_paused(self, s: DeploymentFilterPaused) -> Clause | None:
        return None if s.eq_ is None else deployment.c.paused.is_(s.eq_)

    def _deployment_tags(self, s: DeploymentFilterTags) -> Clause | None:
        tags = deployment.c.tags
        return _combine(
            [
                self.tags_all(tags, s, "all_"),
                self.tags_any(tags, s, "any_"),
                self.tags_empty(tags, s.is_null_),
            ],
            s.operator,
        )

    def _deployment_work_queue_name(self, s: DeploymentFilterWorkQueueName) -> Clause | None:
        return self.any_(deployment.c.work_queue_name, s, "any_")

    def work_pool(self, f: WorkPoolFilter) -> Clause | None:
        return _combine(
            [
                _sub(f.id, lambda s: self.any_(work_pool.c.id, s, "any_")),
                _sub(f.name, lambda s: self.any_(work_pool.c.name, s, "any_")),
                _sub(f.type, lambda s: self.any_(work_pool.c.type, s, "any_")),
            ],
            f.operator,
        )

    # --- flow runs + task runs: one EXISTS over one flow run ---

    def flow_run_exists(
        self, flow_runs: FlowRunFilter | None, task_runs: TaskRunFilter | None
    ) -> Clause:
        source: FromClause = flow_run
        if task_runs is not None:
            source = flow_run.join(task_run, task_run.c.flow_run_id == flow_run.c.id)
        query: Select[tuple[Any]] = (
            select(literal_column("1"))
            .select_from(source)
            .where(flow_run.c.flow_id == flow.c.id)
            .correlate(flow)
        )
        for clause in (_sub(flow_runs, self.flow_run), _sub(task_runs, self.task_run)):
            if clause is not None:
                query = query.where(clause)
        return query.exists()

    def flow_run(self, f: FlowRunFilter) -> Clause | None:
        c = flow_run.c
        return _combine(
            [
                _sub(f.id, self._flow_run_id),
                _sub(f.name, self._flow_run_name),
                _sub(f.tags, self._flow_run_tags),
                _sub(f.deployment_id, self._flow_run_deployment_id),
                _sub(f.work_queue_name, self._flow_run_work_queue_name),
                _sub(f.state, self._flow_run_state),
                _sub(f.flow_version, lambda s: self.any_(c.flow_version, s, "any_")),
                _sub(f.start_time, self._flow_run_start_time),
                _sub(f.end_time, lambda s: self.window(c.end_time, s, s.is_null_)),
                _sub(
                    f.expected_start_time,
                    lambda s: self.window(c.expected_start_time, s),
                ),
                _sub(
                    f.next_scheduled_start_time,
                    lambda s: self.window(c.next_scheduled_start_time, s),
                ),
                _sub(f.parent_flow_run_id, self._flow_run_parent_flow_run_id),
                _sub(f.parent_task_run_id, self._flow_run_parent_task_run_id),
                _sub(f.idempotency_key, self._flow_run_idempotency_key),
                _sub(f.created_by, self._flow_run_created_by),
            ],
            f.operator,
        )

    def _flow_run_id(self, s: FlowRunFilterId) -> Clause | None:
        c = flow_run.c
        return _all(self.any_(c.id, s, "any_"), self.not_any_(c.id, s, "not_any_"))

    def _flow_run_name(self, s: FlowRunFilterName) -> Clause | None:
        return _all(self.any_(flow_run.c.name, s, "any_"), self.like(flow_run.c.name, s, "like_"))

    def _flow_run_tags(self, s: FlowRunFilterTags) -> Clause | None:
        tags = flow_run.c.tags
        return _combine(
            [
                self.tags_all(tags, s, "all_"),
                self.tags_any(tags, s, "any_"),
                self.tags_empty(tags, s.is_null_),
            ],
            s.operator,
        )

    def _flow_run_deployment_id(self, s: FlowRunFilterDeploymentId) -> Clause | None:
        column = flow_run.c.deployment_id
        return _combine([self.any_(column, s, "any_"), _is_null(column, s.is_null_)], s.operator)

    def _flow_run_work_queue_name(self, s: FlowRunFilterWorkQueueName) -> Clause | None:
        column = flow_run.c.work_queue_name
        return _combine([self.any_(column, s, "any_"), _is_null(column, s.is_null_)], s.operator)

    def _flow_run_state(self, s: FlowRunFilterState) -> Clause | None:
        # Unlike other parents, the state filter skips parts that yield nothing (TRUE), so
        # `or_` with an empty `type: {}` does not match everything.
        c = flow_run.c
        parts: list[Clause | None] = []
        if s.type is not None:
            parts.append(
                _all(
                    self.any_(c.state_type, s.type, "any_"),
                    self.not_any_(c.state_type, s.type, "not_any_"),
                )
            )
        if s.name is not None:
            parts.append(
                _all(
                    self.any_(c.state_name, s.name, "any_"),
                    self.not_any_(c.state_name, s.name, "not_any_"),
                )
            )
        return _combine(parts, s.operator)

    def _flow_run_start_time(self, s: FlowRunFilterStartTime) -> Clause | None:
        # Prefect bounds a run's start, or its scheduled start while it has not started;
        # `is_null_` looks at the real start only.
        started = flow_run.c.start_time
        start_or_expected = func.coalesce(started, flow_run.c.expected_start_time)
        return _all(self.window(start_or_expected, s), _is_null(started, s.is_null_))

    def _flow_run_parent_flow_run_id(self, s: FlowRunFilterParentFlowRunId) -> Clause | None:
        """Subflow runs of the given runs: the run's parent task ran inside one of them."""
        if s.any_ is None:
            return None
        parent_task = task_run.alias("parent_task")
        in_parents = self.any_(parent_task.c.flow_run_id, s, "any_")
        assert in_parents is not None
        tasks = select(parent_task.c.id).where(in_parents)
        return _combine([flow_run.c.parent_task_run_id.in_(tasks)], s.operator)

    def _flow_run_parent_task_run_id(self, s: FlowRunFilterParentTaskRunId) -> Clause | None:
        column = flow_run.c.parent_task_run_id
        return _combine([self.any_(column, s, "any_"), _is_null(column, s.is_null_)], s.operator)

    def _flow_run_idempotency_key(self, s: FlowRunFilterIdempotencyKey) -> Clause | None:
        column = flow_run.c.idempotency_key
        return _all(self.any_(column, s, "any_"), self.not_any_(column, s, "not_any_"))

    def _flow_run_created_by(self, s: FlowRunFilterCreatedBy) -> Clause | None:
        created_by = flow_run.c.created_by
        return _combine(
            [
                self.any_(created_by["id"].as_string(), s, "id_"),
                self.any_(created_by["type"].as_string(), s, "type_"),
                _is_null(created_by, s.is_null_),
            ],
            s.operator,
        )

    def task_run(self, f: TaskRunFilter) -> Clause | None:
        c = task_run.c
        return _combine(
            [
                _sub(f.id, lambda s: self.any_(c.id, s, "any_")),
                _sub(f.name, self._task_run_name),
                _sub(f.tags, self._task_run_tags),
                _sub(f.state, self._task_run_state),
                _sub(f.start_time, lambda s: self.window(c.start_time, s, s.is_null_)),
                _sub(f.end_time, lambda s: self.window(c.end_time, s, s.is_null_)),
                _sub(
                    f.expected_start_time,
                    lambda s: self.window(c.expected_start_time, s),
                ),
                _sub(f.subflow_runs, _task_run_subflow_runs),
                _sub(f.flow_run_id, self._task_run_flow_run_id),
            ],
            f.operator,
        )

    def _task_run_name(self, s: TaskRunFilterName) -> Clause | None:
        return _all(self.any_(task_run.c.name, s, "any_"), self.like(task_run.c.name, s, "like_"))

    def _task_run_tags(self, s: TaskRunFilterTags) -> Clause | None:
        tags = task_run.c.tags
        return _combine(
            [self.tags_all(tags, s, "all_"), self.tags_empty(tags, s.is_null_)], s.operator
        )

    def _task_run_state(self, s: TaskRunFilterState) -> Clause | None:
        # Prefect keeps only the parts that compile to one comparison; as each part has only
        # `any_`, that means: a part without `any_` is skipped (it is not TRUE).
        parts: list[Clause | None] = []
        if s.type is not None:
            parts.append(self.any_(task_run.c.state_type, s.type, "any_"))
        if s.name is not None:
            parts.append(self.any_(task_run.c.state_name, s.name, "any_"))
        return _combine(parts, s.operator)

    def _task_run_flow_run_id(self, s: TaskRunFilterFlowRunId) -> Clause | None:
        column = task_run.c.flow_run_id
        if s.is_null_ is True:
            return column.is_(None)
        if s.is_null_ is False and s.any_ is None:
            return column.is_not(None)
        return _combine([self.any_(column, s, "any_")], s.operator)


def _flow_tags_empty(is_null: bool | None) -> Clause | None:
    if is_null is None:
        return None
    tagged: Select[tuple[Any]] = (
        select(literal_column("1")).where(flow_tag.c.flow_id == flow.c.id).correlate(flow)
    )
    return ~tagged.exists() if is_null else tagged.exists()


def _task_run_subflow_runs(s: TaskRunFilterSubFlowRuns) -> Clause | None:
    """Is the task run the parent of a subflow run?"""
    if s.exists_ is None:
        return None
    subflow = flow_run.alias("subflow_run")
    parent_of = (
        select(literal_column("1"))
        .select_from(subflow)
        .where(subflow.c.parent_task_run_id == task_run.c.id)
        .correlate(task_run)
        .exists()
    )
    return parent_of if s.exists_ else ~parent_of
