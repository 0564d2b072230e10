"""The database handle every model binds to, set once by models.db.open_database."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import peewee

database_proxy = peewee.DatabaseProxy()


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class Cursor(Protocol):
    """The DB-API cursor of sqlite3 or psycopg that a raw statement returns."""

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    @property
    def rowcount(self) -> int: ...


def execute_sql(db: peewee.Database, sql: str, params: Sequence[object] | None = None) -> Cursor:
    """db.execute_sql(sql, params), typed: the one raw-SQL call, for statements peewee has no query for."""
    cursor: Cursor = db.execute_sql(sql, params)  # type: ignore[no-untyped-call]  # peewee's own stubs leave it untyped
    return cursor
