"""A filter's shape and its bound values: what lets one compiled statement serve every request
of the same shape.

`filter_sql.py` binds every value a request brings as a parameter *named after where it sits in
the request* (`f__flows__name__like_`), and takes the value from the dict made here, never from
the model directly. What the SQL looks like depends only on the shape: which sub-filters and
criteria are present, the booleans and enums (`is_null_`, `operator`), whether a pattern is
empty, whether a list holds values with or without U+0000 (filter_sql.py compares those by their
bytes) and whether it holds one distinct value or more. So a statement built for one request
answers any request of the same shape once it is given that request's values.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime
from enum import Enum
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel

__all__ = ["ByShape", "Described", "describe", "split_nul"]

# The values a list criterion binds (a statement uses the ones its SQL needs):
PLAIN_JSON: Final = "__plain"  # SQLite: JSON text of the values without U+0000
HEX_JSON: Final = "__hex"  # SQLite: JSON text of the others, as the upper-case hex of their UTF-8
ALL_JSON: Final = "__all"  # SQLite: JSON text of every value
DISTINCT: Final = "__n"  # how many distinct values
TEXT_ARRAY: Final = "__array"  # PostgreSQL: the values as a text array


_Worked = TypeVar("_Worked")


class ByShape(Generic[_Worked]):
    """What was worked out per filter shape (a statement, a decision), the `size` most recently
    used. It holds no values and no connection, so one process-wide instance serves every
    engine (a key names its dialect where that matters); a lock keeps it whole should queries
    ever run on more than one thread."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._worked: OrderedDict[Hashable, _Worked] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, work: Callable[[], _Worked]) -> _Worked:
        with self._lock:
            if key in self._worked:
                self._worked.move_to_end(key)
                return self._worked[key]
        worked = work()  # outside the lock: building a statement takes a millisecond
        with self._lock:
            self._worked[key] = worked
            if len(self._worked) > self._size:
                self._worked.popitem(last=False)
        return worked


class Described:
    """A filter (or a part of one) described: `shape` keys the statement cache, `params` are
    the request's values by name, and `path_of` names a sub-filter of this request."""

    __slots__ = ("_paths", "params", "shape")

    def __init__(self) -> None:
        self.shape: Hashable = ()
        self.params: dict[str, Any] = {}
        self._paths: dict[int, str] = {}

    def name(self, owner: object, field: str) -> str:
        """The parameter name of `owner.field` (owner: a sub-filter of the described model)."""
        return f"{self._paths[id(owner)]}__{field}"


def describe(model: object, root: str) -> Described:
    """The shape and values of `model`, its parameters named under `root`."""
    described = Described()
    described.shape = _walk(model, root, described)
    return described


def split_nul(texts: list[str]) -> tuple[list[str], list[str]]:
    """Values SQLite's JSON functions carry intact, and the others as the upper-case hex of
    their UTF-8, what SQLite's `hex()` gives for a column.

    `json_each` cuts a string at U+0000 ("nul\\u0000byte" arrives as "nul"), so a value holding
    one is compared by its bytes instead: `hex(column) IN (...)`, which reads every row (no
    index) but is only ever built for such values.
    """
    plain = [text for text in texts if "\x00" not in text]
    with_nul = [text.encode().hex().upper() for text in texts if "\x00" in text]
    return plain, with_nul


def _texts(values: list[Any]) -> list[str]:
    # Ids are stored as canonical lower-case text, exactly what str(UUID) gives; state types
    # are StrEnums, whose str() is their value.
    return [str(v) for v in values]


@functools.cache
def _fields(kind: Any) -> tuple[str, ...]:
    if issubclass(kind, BaseModel):
        return tuple(kind.model_fields)
    return tuple(field.name for field in dataclasses.fields(kind))


def _walk(model: object, path: str, described: Described) -> Hashable:
    described._paths[id(model)] = path
    params = described.params
    shape: list[Hashable] = []
    kind: Any = type(model)
    for field in _fields(kind):
        value = getattr(model, field)
        if value is None:
            continue  # absent and null mean the same to every criterion
        name = f"{path}__{field}"
        if isinstance(value, BaseModel):
            shape.append((field, _walk(value, name, described)))
        elif isinstance(value, list):
            texts = _texts(value)
            plain, with_nul = split_nul(texts)
            every = json.dumps(texts)
            params[name + ALL_JSON] = every
            # Mostly no value holds U+0000: then the plain ones are all of them.
            params[name + PLAIN_JSON] = json.dumps(plain) if with_nul else every
            params[name + HEX_JSON] = json.dumps(with_nul) if with_nul else "[]"
            distinct = len(set(texts))
            params[name + DISTINCT] = distinct
            params[name + TEXT_ARRAY] = texts
            # One distinct value or more: a tags-only count differs (queries.py).
            shape.append((field, "list", bool(plain), bool(with_nul), min(distinct, 2)))
        elif isinstance(value, bool | Enum):
            shape.append((field, value))  # IS TRUE or IS FALSE, AND or OR: different SQL
        elif isinstance(value, str):
            params[name] = f"%{value}%"  # the only text criterion is `like_`, a substring
            shape.append((field, "text", bool(value)))
        elif isinstance(value, datetime | int):
            params[name] = value
            shape.append((field, type(value).__name__))
        else:
            raise TypeError(f"filter field {name} holds a {type(value).__name__}: describe it")
    return tuple(shape)
