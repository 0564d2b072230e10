"""SQL built once per statement shape, for the statements every message runs (issue 16).

Peewee builds a statement's text anew on every execution, and for a short statement that
costs several times what SQLite spends running it. A hot-path statement is therefore still
written as a peewee query, with a `Slot` where each value goes; its text, and the converter
each value passes through (the field's `db_value`, as peewee would apply it), are worked out
once per database dialect, and each execution only binds the values. Values that are not
slots (a constant IN list, LIMIT 1) are bound as they were when the text was built.

Statements run on the database the models are bound to (models.db.open_database), as the
models' own queries do. The compiled form is a pure function of the query and the dialect, so
it is memoised on the `Statement` itself, like a compiled regular expression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee

from models.base import Cursor, database_proxy, execute_sql


@dataclass(frozen=True)
class Slot:
    """Where a value goes in a statement built once."""

    name: str


class Slots:
    """`s.raw_hash` is `Slot("raw_hash")`: the builder of a Statement names its values this way."""

    def __getattr__(self, name: str) -> Slot:
        return Slot(name)


@dataclass(frozen=True)
class _Bound:
    """A slot in the parameter list, with the converter peewee would have applied to its value."""

    name: str
    convert: Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple[Any, ...]                                  # _Bound, or a constant bound as is
    columns: tuple[Callable[[Any], Any] | None, ...]         # python_value of each selected/returned field


class _SlotContext(peewee.Context):
    """Peewee's SQL context, except that a Slot is bound later instead of converted now."""

    __slots__ = ()

    def value(self, value: Any, converter: Any = None, add_param: bool = True) -> Any:
        if not isinstance(value, Slot):
            return super().value(value, converter, add_param)
        if not converter and converter is not False:
            converter = self.state.converter     # peewee: the field an expression compares with
        self._values.append(_Bound(value.name, converter or None))  # type: ignore[attr-defined]  # a slot of Context
        return self.literal(self.state.param or "?") if add_param else self


class Statement:
    """One statement shape. `build(s)` returns the peewee query, with `s.name` for each value."""

    def __init__(self, build: Callable[[Slots], peewee.Query]) -> None:
        self._build = build
        self._compiled: dict[type[peewee.Database], _Compiled] = {}

    def _for(self, db: peewee.Database) -> _Compiled:
        compiled = self._compiled.get(type(db))
        if compiled is None:   # first use on this dialect
            query = self._build(Slots())
            ctx = _SlotContext(**db.get_context_options())
            sql, params = ctx.sql(query).query()  # type: ignore[no-untyped-call]  # untyped in peewee's stubs
            returned = getattr(query, "_returning", None) or ()
            columns = tuple(c.python_value if isinstance(c, peewee.Field) else None for c in returned)
            compiled = self._compiled[type(db)] = _Compiled(sql, tuple(params), columns)
        return compiled

    def sql(self) -> str:
        return self._for(_bound()).sql

    def _execute(self, values: dict[str, Any]) -> tuple[_Compiled, Cursor]:
        db = _bound()
        compiled = self._for(db)
        params = [(values[p.name] if p.convert is None else p.convert(values[p.name])) if isinstance(p, _Bound) else p
                  for p in compiled.params]
        return compiled, execute_sql(db, compiled.sql, params)

    def rows(self, **values: Any) -> list[tuple[Any, ...]]:
        """Every row it selects or returns, each value as its field's python_value gives it."""
        compiled, cursor = self._execute(values)
        return [_converted(row, compiled.columns) for row in cursor.fetchall()]

    def first(self, **values: Any) -> tuple[Any, ...] | None:
        rows = self.rows(**values)
        return rows[0] if rows else None

    def run(self, **values: Any) -> int:
        """Execute it; the number of rows it changed."""
        _, cursor = self._execute(values)
        return cursor.rowcount


def _bound() -> peewee.Database:
    """The database open_database bound the models to."""
    db: peewee.Database = database_proxy.obj
    return db


def _converted(row: Sequence[Any], columns: tuple[Callable[[Any], Any] | None, ...]) -> tuple[Any, ...]:
    return tuple(value if convert is None or value is None else convert(value)
                 for value, convert in zip(row, columns))


M = TypeVar("M", bound=peewee.Model)

_INSERTS: dict[tuple[type[peewee.Model], tuple[str, ...]], Statement] = {}


def insert(model: type[peewee.Model], **values: Any) -> int:
    """`model.create(**values)` without the model: the new row's id. One Statement per model and
    set of columns (a handful in all), built on first use."""
    shape = (model, tuple(values))
    statement = _INSERTS.get(shape)
    if statement is None:
        statement = _INSERTS[shape] = Statement(
            lambda s: model.insert({name: getattr(s, name) for name in shape[1]}).returning(model._meta.primary_key))
    row = statement.first(**values)
    assert row is not None, "INSERT … RETURNING returns the row"
    new_id: int = row[0]
    return new_id


def create(model: type[M], **values: Any) -> M:
    """`model.create(**values)`, with the INSERT built once per shape: the new row as a model instance."""
    instance = model(**values)
    key = model._meta.primary_key
    assert isinstance(key, peewee.Field), "our models have a one-column key"
    setattr(instance, key.name, insert(model, **values))
    return instance
